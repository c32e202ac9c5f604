"""specvlm.accelerate: token-for-token equality with ``target.generate(do_sample=False)``.

Tiny random models of each supported family (tests/tiny_models.py, built from configs, no
downloads). The kernels run through their PyTorch references here (their own tests compare the
Triton kernels with those references); ``test_triton_kernels_in_the_loop`` runs the Triton
kernels (interpreter on CPU) inside the loop once per family.
"""

from __future__ import annotations

import copy

import pytest
import torch

import specvlm
from specvlm.families import family_of
from specvlm.selectors import keep_count
from specvlm.trees import Tree, chain
from tests import tiny_models as tm

FAMILIES = tm.FAMILIES
NEW = 12


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with tm.single_threaded():  # tiny models are far faster on one intra-op thread
        yield


@pytest.fixture(autouse=True)
def _reference_kernels(monkeypatch, request):
    if "triton_loop" not in request.keywords:
        monkeypatch.setenv("SPECVLM_KERNELS_BACKEND", "reference")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


_PAIRS: dict = {}


def pair(family):
    if family not in _PAIRS:
        _PAIRS[family] = tm.make_pair(family, seed=0)
    return _PAIRS[family]


def reference(target, inputs, **kw):
    kw.setdefault("max_new_tokens", NEW)
    with torch.no_grad():
        return target.generate(**inputs, do_sample=False, **kw)


def assert_same(
    family, inputs, *, tree=None, drop_rate=0.9, selector="two_stage", draft=None, **gen
):
    target, small = pair(family)
    ref = reference(target, inputs, **gen)
    sd = specvlm.accelerate(
        (target, draft or small), drop_rate=drop_rate, selector=selector, tree=tree
    )
    gen.setdefault("max_new_tokens", NEW)
    out = sd.generate(**inputs, **gen)
    assert out.tolist() == ref.tolist(), f"{family}: speculative output differs from greedy"
    return sd.last_stats


# --------------------------------------------------------------------------------------------
# Equality
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("drop_rate", [0.0, 0.5, 0.9])
def test_equal_to_greedy_for_drop_rates(family, drop_rate):
    target, _ = pair(family)
    stats = assert_same(family, tm.make_inputs(family, target, seed=1), drop_rate=drop_rate)
    assert stats.video_tokens > 0
    assert stats.kept_video_tokens == keep_count(stats.video_tokens, drop_rate)
    assert stats.new_tokens == NEW
    assert stats.target_forwards == 1 + len(stats.accepted_lengths)
    t, h, w = stats.video_grid
    assert stats.video_scores.shape == (t * h * w,) == (stats.video_tokens,)
    assert bool((stats.video_scores >= 0).all()) and float(stats.video_scores.sum()) > 0
    kept = stats.kept_indices
    assert kept.numel() == stats.kept_video_tokens and bool((kept[1:] > kept[:-1]).all())


def _callable_selector(scores, keep, grid):
    return torch.arange(keep) * 0 + torch.arange(keep)  # the first `keep` grid tokens


@pytest.mark.parametrize(
    "selector", ["attention", "uniform", "random", "similarity", "semantic", _callable_selector]
)
def test_equal_to_greedy_for_selectors(family, selector):
    target, _ = pair(family)
    assert_same(family, tm.make_inputs(family, target, seed=2), selector=selector)


@pytest.mark.parametrize(
    "tree",
    [chain(1), chain(4), [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]], None],
    ids=["chain1", "chain4", "small-tree", "default-tree"],
)
def test_equal_to_greedy_for_trees(family, tree):
    target, _ = pair(family)
    assert_same(family, tm.make_inputs(family, target, seed=3), tree=tree, drop_rate=0.5)


@pytest.mark.parametrize("before,after", [(0, 6), (7, 1), (3, 9)])
def test_text_around_the_video(family, before, after):
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=4, text_before=before, text_after=after)
    assert_same(family, inputs)


def test_prompt_without_video(family):
    target, _ = pair(family)
    stats = assert_same(family, tm.make_inputs(family, target, seed=5, video=False))
    assert stats.video_tokens == 0


def test_one_new_token(family):
    target, _ = pair(family)
    stats = assert_same(family, tm.make_inputs(family, target, seed=6), max_new_tokens=1)
    assert stats.new_tokens == 1


def test_stops_at_eos(family):
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=7)
    greedy = reference(target, inputs)[0, inputs["input_ids"].shape[1] :].tolist()
    eos = greedy[4]  # a token the target produces: generation must stop at its first occurrence
    stats = assert_same(family, inputs, eos_token_id=[eos, 1])
    assert stats.new_tokens == greedy.index(eos) + 1


@pytest.mark.parametrize("confidence", [0.3, 1.0])
@pytest.mark.parametrize("tree", [chain(5), None], ids=["chain5", "default-tree"])
def test_early_stopped_drafting_is_lossless(family, confidence, tree):
    target, small = pair(family)
    inputs = tm.make_inputs(family, target, seed=17)
    ref = reference(target, inputs)
    sd = specvlm.accelerate(
        (target, small), policy=None, tree=tree, min_draft_confidence=confidence
    )
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref.tolist()
    depths = sd.last_stats.drafted_depths
    assert len(depths) == len(sd.last_stats.accepted_lengths)
    if confidence == 1.0:  # no path is ever certain: every step drafts the first level only
        assert set(depths) == {1}
    else:
        assert all(1 <= d <= sd.tree.depth for d in depths)


def test_drafting_stops_below_eos(family):
    """A copy draft predicts the target's EOS; the first step's chain must end right there."""
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=7)
    greedy = reference(target, inputs)[0, inputs["input_ids"].shape[1] :].tolist()
    eos = greedy[4]
    first = greedy.index(eos)  # generation ends at the first occurrence
    assert 1 <= first <= 4
    stats = assert_same(
        family,
        inputs,
        tree=chain(8),
        drop_rate=0.0,
        draft=tm.make_copy_draft(target),
        eos_token_id=eos,
    )
    assert stats.drafted_depths[0] == first
    assert stats.new_tokens == first + 1


@pytest.mark.parametrize("value,error", [(-0.1, ValueError), (1.5, ValueError), ("x", TypeError)])
def test_bad_min_draft_confidence(family, value, error):
    with pytest.raises(error, match="min_draft_confidence"):
        specvlm.accelerate(pair(family), min_draft_confidence=value)


def test_max_length_instead_of_max_new_tokens(family):
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=8)
    length = inputs["input_ids"].shape[1] + 5
    assert_same(family, inputs, max_length=length, max_new_tokens=None)


def test_copy_draft_accepts_nearly_everything(family):
    """A draft identical to the target must have (almost) every proposal accepted: this catches
    broken acceptance that equality alone cannot see."""
    target, _ = pair(family)
    tree = chain(5)
    inputs = tm.make_inputs(family, target, seed=9)
    stats = assert_same(
        family,
        inputs,
        tree=tree,
        drop_rate=0.0,
        draft=tm.make_copy_draft(target),
        max_new_tokens=25,
    )
    full = stats.accepted_lengths[:-1]  # the last step may be cut by the budget
    assert sum(full) / len(full) >= tree.depth + 0.5, stats.accepted_lengths


def test_streamer_sees_every_token(family):
    target, small = pair(family)
    inputs = tm.make_inputs(family, target, seed=10)

    class Recorder:
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value.reshape(-1).tolist())

        def end(self):
            self.ended = True

    rec = Recorder()
    out = specvlm.accelerate((target, small)).generate(**inputs, max_new_tokens=NEW, streamer=rec)
    assert rec.ended
    assert rec.chunks[0] == inputs["input_ids"][0].tolist()
    assert sum(rec.chunks[1:], []) == out[0, inputs["input_ids"].shape[1] :].tolist()


def _events(family, max_new_tokens):
    """The order of draft forwards and streamed new tokens during one generate."""
    target, small = pair(family)
    inputs = tm.make_inputs(family, target, seed=10)
    events: list[str] = []

    class Recorder:
        prompt_seen = False

        def put(self, value):
            if self.prompt_seen:
                events.append("token")
            self.prompt_seen = True

        def end(self):
            pass

    decoder = family_of(small, "draft").decoder(small)
    handle = decoder.register_forward_pre_hook(lambda *_: events.append("draft"))
    try:
        sd = specvlm.accelerate((target, small), drop_rate=0.5)
        sd.generate(**inputs, max_new_tokens=max_new_tokens, streamer=Recorder())
    finally:
        handle.remove()
    return events


def test_first_token_after_the_draft_prefill(family):
    # decode time (first token -> end) is the speculate / verify loop alone (docs/design.md)
    events = _events(family, NEW)
    assert events[0] == "draft" and "token" in events
    assert events.index("token") > 0


def test_one_token_needs_no_draft(family):
    assert _events(family, 1) == ["token"]


def test_models_unchanged(family):
    target, small = pair(family)
    inputs = tm.make_inputs(family, target, seed=11)
    before = reference(target, inputs)
    states = [copy.deepcopy(m.state_dict()) for m in (target, small)]
    impls = [m.config.get_text_config()._attn_implementation for m in (target, small)]
    specvlm.accelerate((target, small)).generate(**inputs, max_new_tokens=NEW)

    def broken(scores, keep, grid):
        raise RuntimeError("selector failure")

    with pytest.raises(RuntimeError, match="selector failure"):
        sd = specvlm.accelerate((target, small), policy=None, selector=broken)
        sd.generate(**inputs, max_new_tokens=3)
    for m, state, impl in zip((target, small), states, impls, strict=True):
        assert m.config.get_text_config()._attn_implementation == impl
        now = m.state_dict()
        assert all(torch.equal(now[k], v) for k, v in state.items())
    assert reference(target, inputs).tolist() == before.tolist()


@pytest.mark.triton_loop
def test_triton_kernels_in_the_loop(family):
    """The Triton kernels (interpreter on CPU) inside the loop: scores, selection, tree
    attention."""
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=12, frames=2)
    assert_same(family, inputs, tree=[[0], [1], [0, 0]], drop_rate=0.5, max_new_tokens=4)


# --------------------------------------------------------------------------------------------
# Errors, raised before any work
# --------------------------------------------------------------------------------------------
def test_beams_refused(family):
    target, small = pair(family)
    inputs = tm.make_inputs(family, target, seed=13)
    sd = specvlm.accelerate((target, small))
    with pytest.raises(NotImplementedError, match="num_beams"):
        sd.generate(**inputs, num_beams=2, max_new_tokens=3)
    with pytest.raises(NotImplementedError, match="assistant_model"):
        sd.generate(**inputs, assistant_model=small, max_new_tokens=3)


def test_batch_of_two_refused(family):
    target, small = pair(family)
    inputs = tm.make_inputs(family, target, seed=14, video=False)
    inputs = {
        k: (torch.cat([v, v]) if k in ("input_ids", "attention_mask") else v)
        for k, v in inputs.items()
    }
    with pytest.raises(NotImplementedError, match="batch size 2"):
        specvlm.accelerate((target, small)).generate(**inputs, max_new_tokens=3)


@pytest.mark.parametrize("drop_rate", [1.0, -0.1, 1.5])
def test_bad_drop_rate(family, drop_rate):
    with pytest.raises(ValueError, match="drop_rate"):
        specvlm.accelerate(pair(family), drop_rate=drop_rate)


def test_bad_selector_and_tree(family):
    with pytest.raises(ValueError, match="selector must be one of"):
        specvlm.accelerate(pair(family), selector="best")
    with pytest.raises(ValueError, match="no parent"):
        specvlm.accelerate(pair(family), tree=[[0, 0]])


def test_selector_returning_garbage(family):
    target, small = pair(family)
    inputs = tm.make_inputs(family, target, seed=15)
    sd = specvlm.accelerate(
        (target, small), policy=None, selector=lambda s, k, g: torch.zeros(k + 1).long()
    )
    with pytest.raises(ValueError, match="expected keep"):
        sd.generate(**inputs, max_new_tokens=3)
    sd = specvlm.accelerate(
        (target, small), policy=None, selector=lambda s, k, g: torch.zeros(k).long()
    )
    with pytest.raises(ValueError, match="duplicate"):
        sd.generate(**inputs, max_new_tokens=3)


@pytest.mark.parametrize("padded", ["draft", "target"])
def test_vocabularies_differing_by_padding(family, padded):
    """Same tokenizer, padding rows added to one model (as Qwen2.5-VL-3B vs 7B): lossless, greedy
    and sampled; the draft never proposes an id it lacks, and is fed a placeholder for one."""
    target, small = (copy.deepcopy(m) for m in pair(family))
    (small if padded == "draft" else target).resize_token_embeddings(tm.VOCAB_SIZE + 40)
    inputs = tm.make_inputs(family, target, seed=14)
    with torch.no_grad():
        ref = target.generate(**inputs, do_sample=False, max_new_tokens=NEW)
        if padded == "target":  # make the target emit a padding id, which the draft lacks
            start = inputs["input_ids"].shape[1]
            head = target.get_output_embeddings().weight
            head[tm.VOCAB_SIZE + 2] = 2 * head[int(ref[0, start + 3])]
            ref = target.generate(**inputs, do_sample=False, max_new_tokens=NEW)
            assert tm.VOCAB_SIZE + 2 in ref[0, start:].tolist()
    for children in ("top_k", "sampled"):
        sd = specvlm.accelerate((target, small), drop_rate=0.5, children=children)
        assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref.tolist()
        out = sd.generate(**inputs, do_sample=True, max_new_tokens=NEW, generator=torch.Generator())
        assert out.shape == ref.shape


def test_different_special_tokens_refused():
    target, small = (copy.deepcopy(m) for m in pair("llava_onevision"))
    small.generation_config.eos_token_id = 3
    with pytest.raises(ValueError, match="eos_token_id"):
        specvlm.accelerate((target, small))
    small = copy.deepcopy(pair("llava_onevision")[1])
    small.resize_token_embeddings(64)  # cuts real tokens (the video token among them)
    with pytest.raises(ValueError, match="more than padding"):
        specvlm.accelerate((target, small))


def test_mixed_families_refused():
    with pytest.raises(ValueError, match="same model family"):
        specvlm.accelerate((pair("llava_onevision")[0], pair("qwen2_5_vl")[1]))


def test_unsupported_family_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
        )
    )
    with pytest.raises(ValueError, match="supported: LLaVA-OneVision"):
        specvlm.accelerate((llama, llama))


def test_not_a_pair():
    with pytest.raises(TypeError, match="pair"):
        specvlm.accelerate(pair("llava_onevision")[0])


def test_tree_objects_accepted():
    sd = specvlm.accelerate(pair("llava_onevision"), tree=Tree.from_paths([[0], [0, 0]]))
    assert sd.tree.size == 2


@pytest.mark.parametrize("mode", ["compact", "original"])
@pytest.mark.parametrize("drop_rate", [0.5, 0.9])
def test_one_d_draft_position_modes(drop_rate, mode):
    target, small = pair("llava_onevision")
    inputs = tm.make_inputs("llava_onevision", target, seed=16)
    ref = reference(target, inputs)
    sd = specvlm.accelerate((target, small), drop_rate=drop_rate, draft_positions=mode)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref.tolist()


def test_draft_position_modes_validated():
    with pytest.raises(ValueError, match="M-RoPE"):
        specvlm.accelerate(pair("qwen2_5_vl"), draft_positions="compact")
    with pytest.raises(ValueError, match="draft_positions"):
        specvlm.accelerate(pair("llava_onevision"), draft_positions="gapped")


def test_eager_attention_models():
    """A model loaded with attn_implementation="eager" keeps its own (float-mask) attention for
    the prefill; the routing restores "eager" afterwards."""
    target, small = (copy.deepcopy(m) for m in pair("llava_onevision"))
    for m in (target, small):
        m.set_attn_implementation("eager")
    inputs = tm.make_inputs("llava_onevision", target, seed=17)
    ref = reference(target, inputs)
    out = specvlm.accelerate((target, small)).generate(**inputs, max_new_tokens=NEW)
    assert out.tolist() == ref.tolist()
    assert target.config.get_text_config()._attn_implementation == "eager"


@pytest.mark.parametrize("penalty", [1.3, 0.8])
def test_repetition_penalty_like_generate(family, penalty):
    """generate's repetition penalty (Qwen2.5-VL ships 1.05) applied per tree node."""
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=18)
    stats = assert_same(
        family,
        inputs,
        repetition_penalty=penalty,
        max_new_tokens=16,
        tree=[[0], [1], [0, 0], [1, 0], [0, 0, 0]],
    )
    assert stats.new_tokens == 16
    plain = reference(target, inputs, max_new_tokens=16)
    assert reference(target, inputs, max_new_tokens=16, repetition_penalty=penalty).tolist() != (
        plain.tolist()
    ), "the penalty must change this greedy output, or the test shows nothing"


@pytest.mark.parametrize("family_name", ["qwen2_5_vl", "qwen3_vl"])
def test_qwen_inputs_without_mm_token_type_ids(family_name):
    """Stock ``generate`` prepares text positions when ``mm_token_type_ids`` is missing (a bare
    Qwen3-VL forward raises there); SpecVLM gives the same output."""
    target, _ = pair(family_name)
    inputs = tm.make_inputs(family_name, target, seed=19)
    bare = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    assert_same(family_name, bare)


def test_tree_ranks_beyond_the_vocabulary_refused():
    """Caught in accelerate(), before any work, not inside generate after the target prefill."""
    with pytest.raises(ValueError, match="rank-200 token"):
        specvlm.accelerate(pair("llava_onevision"), tree=[[200]])
    specvlm.accelerate(pair("llava_onevision"), tree=[[tm.VOCAB_SIZE - 1]])
