"""``sd.generate`` as a drop-in for ``target.generate``: every logits processor, stopping
criterion and generation default that ``generate`` honours gives the same greedy output through
the speculative loop (tiny random models of every family). Each test first shows that the
option changes ``target.generate``'s output, so equality is not vacuous."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, StoppingCriteria

import specvlm
from tests import tiny_models as tm

NEW = 14
TREE = [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]


pytestmark = pytest.mark.usefixtures("one_thread", "reference_kernels")


_PAIRS: dict = {}


def pair(family):
    if family not in _PAIRS:
        _PAIRS[family] = tm.make_pair(family, seed=0)
    return _PAIRS[family]


@pytest.fixture(scope="module", params=tm.FAMILIES)
def family(request):
    return request.param


def both(family, inputs, *, copy_draft=False, **gen):
    """(target.generate output, sd.generate output) with the same options."""
    target, draft = pair(family)
    if copy_draft:  # a draft that proposes what the target picks: many tokens per step
        draft = tm.make_copy_draft(target)
    with torch.no_grad():
        ref = target.generate(**inputs, **gen)
    sd = specvlm.accelerate((target, draft), drop_rate=0.5, tree=TREE)
    return ref, sd.generate(**inputs, **gen), sd


def assert_changes_and_equal(family, seed, option: dict, **common):
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=seed)
    common.setdefault("max_new_tokens", NEW)
    common.setdefault("do_sample", False)
    with torch.no_grad():
        plain = target.generate(**inputs, **common)
    for copy_draft in (False, True):
        ref, out, sd = both(family, inputs, copy_draft=copy_draft, **common, **option)
        assert ref.tolist() != plain.tolist(), f"{option} does not change this output"
        assert out.tolist() == ref.tolist(), f"{family}: {option} gives a different output"
    return sd.last_stats


class EvenTokensOnly(LogitsProcessor):
    """A user processor: odd token ids are banned."""

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, 1::2] = -float("inf")
        return scores


class StopAfterToken(StoppingCriteria):
    """A user criterion: stop right after ``token`` is emitted."""

    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores, **kwargs):
        return input_ids[:, -1] == self.token


def _greedy_tokens(family, seed, n=NEW):
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=seed)
    with torch.no_grad():
        out = target.generate(**inputs, do_sample=False, max_new_tokens=n)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def test_no_repeat_ngram_size(family):
    assert_changes_and_equal(family, 20, {"no_repeat_ngram_size": 1})


def test_bad_words_ids(family):
    tokens = _greedy_tokens(family, 21)
    assert_changes_and_equal(family, 21, {"bad_words_ids": [[tokens[2]], [tokens[5]]]})


def test_suppress_tokens_and_begin_suppress(family):
    tokens = _greedy_tokens(family, 22)
    assert_changes_and_equal(family, 22, {"suppress_tokens": [tokens[3]]})
    assert_changes_and_equal(family, 22, {"begin_suppress_tokens": [tokens[0]]})


def test_sequence_bias(family):
    tokens = _greedy_tokens(family, 23)
    assert_changes_and_equal(family, 23, {"sequence_bias": {(tokens[1],): -100.0}})


def test_min_new_tokens(family):
    tokens = _greedy_tokens(family, 24)
    eos = tokens[2]  # the target stops at its third token, unless min_new_tokens forbids it
    assert_changes_and_equal(family, 24, {"min_new_tokens": 6}, eos_token_id=eos)


def test_forced_eos_and_length_penalty(family):
    tokens = _greedy_tokens(family, 25)
    assert_changes_and_equal(family, 25, {"forced_eos_token_id": 5})
    late = next(t for i, t in enumerate(tokens) if i >= 6 and t not in tokens[:i])
    assert_changes_and_equal(
        family, 25, {"exponential_decay_length_penalty": (2, 3.0)}, eos_token_id=late
    )


def test_user_logits_processor(family):
    from transformers import LogitsProcessorList

    assert_changes_and_equal(
        family, 26, {"logits_processor": LogitsProcessorList([EvenTokensOnly()])}
    )


def test_prefix_allowed_tokens_fn(family):
    def allowed(batch_id, sequence):
        assert batch_id == 0
        return list(range(0, tm.VOCAB_SIZE, 3)) if len(sequence) % 2 else list(range(64))

    assert_changes_and_equal(family, 27, {"prefix_allowed_tokens_fn": allowed})


def test_user_stopping_criteria(family):
    from transformers import StoppingCriteriaList

    tokens = _greedy_tokens(family, 28)
    stats = assert_changes_and_equal(
        family, 28, {"stopping_criteria": StoppingCriteriaList([StopAfterToken(tokens[4])])}
    )
    assert stats.new_tokens == tokens.index(tokens[4]) + 1


def test_sampling_with_top_k_1_is_greedy(family):
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=29)
    with torch.no_grad():
        greedy = target.generate(**inputs, do_sample=False, max_new_tokens=NEW)
    for children in ("top_k", "sampled"):
        sd = specvlm.accelerate((target, pair(family)[1]), tree=TREE, children=children)
        out = sd.generate(**inputs, do_sample=True, top_k=1, temperature=0.7, max_new_tokens=NEW)
        assert out.tolist() == greedy.tolist()


def test_no_length_given(family):
    """``generate(**inputs)`` with nothing set: the stock default (20 new tokens here)."""
    target, draft = pair(family)
    inputs = tm.make_inputs(family, target, seed=30)
    with torch.no_grad():
        ref = target.generate(**inputs)
    out = specvlm.accelerate((target, draft)).generate(**inputs)
    assert out.tolist() == ref.tolist()
    assert out.shape[1] - inputs["input_ids"].shape[1] == 20


QWEN25_SHIPPED = dict(
    do_sample=True, top_k=1, top_p=0.001, temperature=0.1, repetition_penalty=1.05
)
QWEN3_SHIPPED = dict(do_sample=True, temperature=0.7, top_p=0.8, top_k=20)


@pytest.mark.parametrize("family_name", ["qwen2_5_vl", "qwen3_vl"])
def test_shipped_generation_configs(family_name):
    """The models' own generation configs, as the Qwen checkpoints ship them, with no overrides:
    Qwen2.5-VL's (top_k=1: exactly the greedy tokens with the penalty) gives target.generate's
    tokens; Qwen3-VL-8B's (sampling) runs and gives a sample of the right length."""
    target, draft = (copy.deepcopy(m) for m in pair(family_name))
    inputs = tm.make_inputs(family_name, target, seed=31)
    for options, exact in ((QWEN25_SHIPPED, True), (QWEN3_SHIPPED, False)):
        base = target.generation_config.to_dict()
        target.generation_config = GenerationConfig(**{**base, **options, "max_new_tokens": 16})
        sd = specvlm.accelerate((target, draft), tree=TREE)
        torch.manual_seed(0)
        out = sd.generate(**inputs)
        assert out.shape[1] <= inputs["input_ids"].shape[1] + 16
        if exact:
            with torch.no_grad():
                ref = target.generate(**inputs)
            assert out.tolist() == ref.tolist()
