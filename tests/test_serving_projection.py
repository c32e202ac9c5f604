"""The vLLM serving projection (specvlm/tools/serving_projection.py): its arithmetic."""

from __future__ import annotations

import pytest

from specvlm.tools import serving_projection as sp


def test_tokens_per_step_is_the_expected_accepted_prefix_plus_one():
    assert sp.tokens_per_step(0.0, 4) == 1.0
    assert sp.tokens_per_step(1.0, 4) == 5.0
    # a = 0.5, k = 2: 1 + 0.5 + 0.25
    assert sp.tokens_per_step(0.5, 2) == pytest.approx(1.75)


def test_batched_drafting_equals_per_request_drafting_for_one_request():
    s = sp.SCENARIOS[0]
    per_request = sp.decode_speedup(s, 1, 0.8, batched_draft=False)
    batched = sp.decode_speedup(s, 1, 0.8, batched_draft=True)
    assert per_request == pytest.approx(batched)


def test_per_request_drafting_falls_behind_as_the_batch_grows():
    s = sp.SCENARIOS[0]
    speedups = [sp.decode_speedup(s, b, 0.8, batched_draft=False) for b in (1, 4, 8)]
    assert speedups[0] > speedups[1] > speedups[2]
    assert sp.decode_speedup(s, 8, 0.8, batched_draft=True) > speedups[2]


def test_more_acceptance_is_faster_and_the_table_has_every_row():
    s = sp.SCENARIOS[1]
    assert sp.decode_speedup(s, 4, 0.8, batched_draft=True) > sp.decode_speedup(
        s, 4, 0.6, batched_draft=True
    )
    lines = sp.table().splitlines()
    assert len(lines) == 2 + len(sp.SCENARIOS) * 2 * 2
