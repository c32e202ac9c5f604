"""Half precision, measured rather than hidden.

In bf16 a tree verification (many tokens in one forward) rounds differently from the one-token
forwards of ``target.generate``: the same logits come out a few ulps apart. Where the target's
top-2 logits are that close (often exactly equal in bf16), the two greedy choices can differ, and
from there on the sequences differ; transformers' own assisted generation diverges at the same
places. This test measures how often that happens on tiny models and checks that *every*
divergence happens at such a near-tie of the target's own logits, which a real acceptance bug
would not respect. Documented in README and docs/design.md ("Precision").

The scale of "near" is measured, not assumed: the same target's logits computed in two valid
orders (one token at a time by ``generate``, and one forward over the whole generated sequence,
which like verification processes many tokens at once) differ by up to ``eps`` on this run. Two
logits that each move by at most ``eps`` can swap order only if they are within ``2 * eps``.
"""

from __future__ import annotations

import pytest
import torch

import specvlm
from tests import tiny_models as tm

NEW = 48
SEEDS = range(6)


def _order_noise(target, inputs: dict, ref) -> float:
    """Largest difference between ``generate``'s logits and one forward over the whole output."""
    start = inputs["input_ids"].shape[1]
    seq = ref.sequences
    full = dict(inputs, input_ids=seq, attention_mask=torch.ones_like(seq))
    if "mm_token_type_ids" in inputs:  # the generated tokens are text
        types = inputs["mm_token_type_ids"]
        full["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1, seq.shape[1] - start)], 1)
    with torch.no_grad():
        forward = target(**full).logits[0, start - 1 : -1].float()
    stepwise = torch.stack([step[0].float() for step in ref.logits])
    return float((forward - stepwise).abs().max())


pytestmark = pytest.mark.usefixtures("reference_kernels")


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_bf16_divergences_only_at_near_ties(family, record_property, capsys):
    with tm.single_threaded():
        target, draft = tm.make_pair(family, dtype=torch.bfloat16)
        sd = specvlm.accelerate((target, draft), drop_rate=0.5)
        diverged = []
        for seed in SEEDS:
            inputs = tm.make_inputs(family, target, seed=seed)
            with torch.no_grad():
                ref = target.generate(
                    **inputs,
                    do_sample=False,
                    max_new_tokens=NEW,
                    output_logits=True,
                    return_dict_in_generate=True,
                )
            out = sd.generate(**inputs, max_new_tokens=NEW)
            start = inputs["input_ids"].shape[1]
            want, got = ref.sequences[0, start:].tolist(), out[0, start:].tolist()
            if want == got:
                continue
            step = next(i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b)
            top1, top2 = ref.logits[step][0].float().topk(2).values.tolist()
            eps = _order_noise(target, inputs, ref)
            diverged.append((seed, step, top1 - top2, eps))
            assert 0 < eps < 0.5, f"implausible bf16 order noise {eps}"
            assert top1 - top2 <= 2 * eps, (
                f"seed {seed}: SpecVLM diverged at step {step} where the target's top-2 logits "
                f"{top1} and {top2} are further apart than twice the bf16 order noise {eps}: "
                "not a rounding tie"
            )
    rate = len(diverged) / len(SEEDS)
    record_property("bf16_divergent_runs", rate)
    where = [(s, t, round(gap, 4), round(eps, 4)) for s, t, gap, eps in diverged]
    with capsys.disabled():
        print(
            f"\n{family}: {len(diverged)}/{len(SEEDS)} bf16 runs of {NEW} tokens diverge, all at "
            f"near-ties (seed, step, top-2 gap, order noise) {where}"
        )
