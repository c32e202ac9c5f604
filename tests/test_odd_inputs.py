"""Odd inputs an adversarial user tries: settings of the wrong type, a broken target, a draft
that cuts videos differently. Each is refused before any work with one clear line, or behaves
exactly as the target's own ``generate`` does."""

from __future__ import annotations

import pytest
import torch

import specvlm
from tests import tiny_models as tm

NEW = 5


pytestmark = pytest.mark.usefixtures("one_thread", "reference_kernels")


@pytest.mark.parametrize("value", ["no", "yes", 0, 1, 0.0, "False"])
def test_speculate_must_be_a_bool_or_none(value):
    target, draft = tm.make_pair("llava_onevision")
    with pytest.raises(TypeError, match="speculate must be True, False or None"):
        specvlm.accelerate((target, draft), speculate=value)


@pytest.mark.parametrize("value", [True, False, None])
def test_speculate_accepts_bools_and_none(value):
    target, draft = tm.make_pair("llava_onevision")
    sd = specvlm.accelerate((target, draft), speculate=value)
    inputs = tm.make_inputs("llava_onevision", target)
    sd.generate(**inputs, max_new_tokens=3, do_sample=False)
    if value is not None:  # None: the policy decides
        assert sd.last_stats.speculated is value


def _nan_pair(family):
    target, draft = tm.make_pair(family, seed=5)
    with torch.no_grad():
        for param in target.parameters():
            param.fill_(float("nan"))
    return target, draft


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_nan_target_greedy_as_generate_at_every_drop_rate(family):
    """A target with NaN weights: ``generate`` still returns tokens (argmax of NaN logits);
    so does SpecVLM at every drop rate (the NaN attention scores are not used for pruning)."""
    target, draft = _nan_pair(family)
    inputs = tm.make_inputs(family, target)
    with torch.no_grad():
        expected = target.generate(**inputs, max_new_tokens=NEW, do_sample=False).tolist()
    for drop_rate in (0.0, 0.5, 0.9, None):
        kwargs = {} if drop_rate is None else {"drop_rate": drop_rate}
        sd = specvlm.accelerate((target, draft), **kwargs)
        out = sd.generate(**inputs, max_new_tokens=NEW, do_sample=False)
        assert out.tolist() == expected, drop_rate


@pytest.mark.parametrize("drop_rate", [0.0, 0.9])
def test_nan_target_sampling_raises_as_generate(drop_rate):
    target, draft = _nan_pair("qwen2_5_vl")
    inputs = tm.make_inputs("qwen2_5_vl", target)
    with pytest.raises(RuntimeError, match="probability tensor") as stock:
        target.generate(**inputs, max_new_tokens=NEW, do_sample=True)
    sd = specvlm.accelerate((target, draft), drop_rate=drop_rate)
    with pytest.raises(RuntimeError) as ours:
        sd.generate(**inputs, max_new_tokens=NEW, do_sample=True)
    assert str(ours.value) == str(stock.value)


def _qwen_draft_with(**vision):
    """A real Qwen2.5-VL draft built with other vision settings (the merger is sized by them)."""
    config = tm._build_config("qwen2_5_vl", tm._DRAFT)
    for name, value in vision.items():
        setattr(config.vision_config, name, value)
    _, model_class = tm._FAMILY_CLASSES["qwen2_5_vl"]
    return model_class(config).eval()


@pytest.mark.parametrize(
    "vision, named",
    [({"spatial_merge_size": 1}, "spatial_merge_size 2 vs 1"), ({"patch_size": 2}, "patch_size")],
)
def test_draft_with_other_vision_geometry_refused_before_any_work(vision, named):
    target, _ = tm.make_pair("qwen2_5_vl")
    draft = _qwen_draft_with(**vision)
    with pytest.raises(ValueError, match=f"cut videos into different tokens.*{named}"):
        specvlm.accelerate((target, draft))


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda cfg: setattr(cfg.vision_config, "image_size", 64), "image_size 32 vs 64"),
        (lambda cfg: setattr(cfg, "vision_feature_select_strategy", "default"), "select_strategy"),
    ],
)
def test_llava_draft_with_other_vision_geometry_refused(edit, named):
    target, draft = tm.make_pair("llava_onevision")
    edit(draft.config)
    with pytest.raises(ValueError, match=f"cut videos into different tokens.*{named}"):
        specvlm.accelerate((target, draft))
