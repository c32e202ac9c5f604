"""Sampling end to end: the first new tokens of ``sd.generate(do_sample=True, ...)`` follow the
distribution of ``target.generate(...)`` with the same options, on tiny models of every family.

The target's exact law of the first ``NEW`` tokens is enumerated with ``target.generate`` itself
(one generated token per prefix, its processed ``scores``: temperature and top-k exactly as
generate applies them); SpecVLM's samples (fixed seeds) are compared with it by a G-test at
``ALPHA``. The same test rejects a deliberately wrong verifier (one that accepts every drafted
token), so it can fail. The draft is the target with noise on its LM head, so that drafted tokens
are sometimes accepted and sometimes not (a random tiny draft is almost never right, and a copy
always), and both branches of the verifier run.
"""

from __future__ import annotations

import collections

import pytest
import torch

import specvlm
from specvlm import sampler
from specvlm.dynamic_tree import DynamicTree
from tests import tiny_models as tm
from tests.test_sampler import g_test

NEW = 3
OPTIONS = dict(do_sample=True, temperature=0.7, top_k=5)
TREE = [[0], [1], [0, 0], [0, 1], [1, 0]]
ALPHA = 1e-3
SAMPLES = {"llava_onevision": 1000, "qwen2_5_vl": 800, "qwen3_vl": 800}
# noise on the draft's LM head, relative to its weights' spread: about half a token accepted
# per call in each family
NOISE = {"llava_onevision": 1.0, "qwen2_5_vl": 0.5, "qwen3_vl": 0.3}


pytestmark = pytest.mark.usefixtures("one_thread", "reference_kernels")


_SETUPS: dict = {}


def setup(family):
    """(target, noisy draft, inputs, exact law of the first NEW tokens), built once."""
    if family not in _SETUPS:
        target, _ = tm.make_pair(family, seed=0)
        draft = tm.make_copy_draft(target)
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            head = draft.lm_head.weight
            head.add_(torch.randn(head.shape, generator=gen) * head.std() * NOISE[family])
        inputs = tm.make_inputs(family, target, seed=3, frames=2)
        _SETUPS[family] = (target, draft, inputs, exact_law(target, inputs))
    return _SETUPS[family]


def _extended(inputs: dict, prefix: tuple[int, ...]) -> dict:
    """The prompt followed by ``prefix`` (text tokens)."""
    if not prefix:
        return inputs
    out = dict(inputs)
    extra = torch.tensor([prefix], dtype=inputs["input_ids"].dtype)
    out["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    if "mm_token_type_ids" in inputs:
        types = inputs["mm_token_type_ids"]
        out["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1, len(prefix))], dim=1)
    return out


def exact_law(target, inputs, new=NEW, options=None) -> dict[tuple[int, ...], float]:
    """P(first ``new`` tokens) under ``target.generate(**inputs, **options)`` (default
    OPTIONS), by enumeration."""
    options = OPTIONS if options is None else options
    eos = set(tm.GENERATION_EOS if isinstance(tm.GENERATION_EOS, list) else [tm.GENERATION_EOS])
    law = {(): 1.0}
    for _ in range(new):
        grown: dict = {}
        for prefix, p in law.items():
            if prefix and prefix[-1] in eos:  # generation ended there
                grown[prefix] = grown.get(prefix, 0.0) + p
                continue
            with torch.no_grad():
                out = target.generate(
                    **_extended(inputs, prefix),
                    max_new_tokens=1,
                    output_scores=True,
                    return_dict_in_generate=True,
                    **options,
                )
            probs = torch.softmax(out.scores[0][0].double(), dim=-1)
            for tok in torch.nonzero(probs > 0).flatten().tolist():
                grown[prefix + (tok,)] = p * float(probs[tok])
        law = grown
    return law


def sample_counts(family, children: str, n: int, seed: int = 0, capture=False, tree=TREE):
    target, draft, inputs, _ = setup(family)
    sd = specvlm.accelerate(
        (target, draft), drop_rate=0.5, tree=tree, children=children, capture=capture
    )
    gen = torch.Generator().manual_seed(seed)
    start = inputs["input_ids"].shape[1]
    counts: collections.Counter = collections.Counter()
    accepted = 0
    for _ in range(n):
        out = sd.generate(**inputs, max_new_tokens=NEW, generator=gen, **OPTIONS)
        counts[tuple(out[0, start:].tolist())] += 1
        accepted += sum(a - 1 for a in sd.last_stats.accepted_lengths)
        assert sd.last_stats.captured == sd.last_stats.target_captured == capture
    return counts, accepted / n


@pytest.mark.parametrize(
    "family,children",
    [(f, "top_k") for f in tm.FAMILIES] + [("llava_onevision", "sampled")],
)
def test_first_tokens_follow_the_target(family, children):
    counts, accepted = sample_counts(family, children, SAMPLES[family])
    assert accepted > 0.1, f"drafted tokens were accepted {accepted:.2f} per call: vacuous"
    p_value = g_test(counts, setup(family)[3])
    assert p_value > ALPHA, f"{family}/{children}: G-test p = {p_value:.2e}"


@pytest.mark.parametrize(
    "family,children", [("qwen2_5_vl", "top_k"), ("llava_onevision", "sampled")]
)
def test_first_tokens_follow_the_target_with_captured_steps(family, children):
    """The same with ``capture=True``: the draft's probabilities and the target's verification
    come from the captured forwards (:mod:`specvlm.capture`)."""
    counts, accepted = sample_counts(family, children, SAMPLES[family], seed=1, capture=True)
    assert accepted > 0.1, f"drafted tokens were accepted {accepted:.2f} per call: vacuous"
    p_value = g_test(counts, setup(family)[3])
    assert p_value > ALPHA, f"{family}/{children} captured: G-test p = {p_value:.2e}"


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_first_tokens_follow_the_target_with_a_dynamic_tree(family):
    """The same with ``tree="dynamic"``: each step's tree is the draft's most likely
    candidates (specvlm/dynamic_tree.py), a deterministic function of the draft's state, so
    the top-k acceptance stays exact."""
    tree = DynamicTree(budget=6, depth=3, width=2, top_k=3)
    counts, accepted = sample_counts(family, "top_k", SAMPLES[family], seed=2, tree=tree)
    assert accepted > 0.1, f"drafted tokens were accepted {accepted:.2f} per call: vacuous"
    p_value = g_test(counts, setup(family)[3])
    assert p_value > ALPHA, f"{family} dynamic tree: G-test p = {p_value:.2e}"


def test_rejects_a_wrong_verifier(monkeypatch):
    """Accepting every drafted token (down the rank-0 children) is caught."""

    def accept_everything(tree, node_tokens, target_probs, *, draft_probs=None, generator=None):
        accepted, node = [], -1
        while True:
            children = [i for i, p in enumerate(tree.parents) if p == node]
            if not children:
                row = target_probs[node + 1]
                return accepted, int(torch.multinomial(row, 1, generator=generator))
            node = children[0]
            accepted.append(node)

    monkeypatch.setattr(sampler, "accept_sampled", accept_everything)
    counts, _ = sample_counts("llava_onevision", "top_k", 300)
    assert g_test(counts, setup("llava_onevision")[3]) < ALPHA
