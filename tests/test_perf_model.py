"""specvlm.tools.perf_model: the roofline projection behaves as its formulas say."""

from __future__ import annotations

from dataclasses import replace

import pytest

from specvlm.tools.perf_model import (
    H100,
    MODELS,
    Scenario,
    break_even_video_tokens,
    forward_seconds,
    project,
    table,
)


def test_single_token_decode_is_weight_bandwidth_bound():
    m = MODELS["llava-ov-7b"]
    t = forward_seconds(m, H100, 1, 0)
    weights = m.params * 2 / H100.bandwidth
    assert weights < t < weights * 1.2  # + KV of one token + per-layer launches


def test_large_prefill_is_compute_bound_and_scales_with_tokens():
    m = MODELS["llava-ov-7b"]
    a = forward_seconds(m, H100, 8192, 0, prefill=True)
    b = forward_seconds(m, H100, 16384, 0, prefill=True)
    assert a > 2 * m.params * 8192 / H100.flops
    assert 2.0 < b / a < 2.5  # linear GEMMs + quadratic attention


def test_decode_speedup_is_proportional_to_tau():
    s = Scenario("qwen2.5-vl-32b", "qwen2.5-vl-7b", 2, 1, 16384, tau=2.0)
    a, b = project(s), project(replace(s, tau=4.0))
    assert b.decode_speedup == pytest.approx(2 * a.decode_speedup)
    assert b.ar_decode_s == pytest.approx(a.ar_decode_s)


def test_tensor_parallel_target_leaves_less_to_gain():
    s = Scenario("llava-ov-72b", "llava-ov-7b", 4, 1, 16384)
    layered, tp = project(s), project(replace(s, tensor_parallel=True))
    assert tp.ar_decode_s < layered.ar_decode_s
    assert tp.decode_speedup < layered.decode_speedup


def test_pruning_shrinks_the_draft_prefill_and_end_to_end_time():
    s = Scenario("llava-ov-72b", "llava-ov-7b", 4, 1, 32768, drop_rate=0.0)
    full, pruned = project(s), project(replace(s, drop_rate=0.9))
    assert pruned.draft_prefill_s < full.draft_prefill_s / 5
    assert pruned.sd_e2e_s < full.sd_e2e_s


def test_break_even_is_where_the_speedup_crosses_one():
    s = Scenario("qwen2.5-vl-32b", "qwen2.5-vl-7b", 2, 1, 0, tau=2.6, new_tokens=64)
    n = break_even_video_tokens(s)
    if n is None:
        assert project(replace(s, video_tokens=1 << 17)).e2e_speedup <= 1.0
    elif n == 0:
        assert project(s).e2e_speedup > 1.0
    else:
        assert project(replace(s, video_tokens=n)).e2e_speedup > 1.0
        assert project(replace(s, video_tokens=max(0, n - 16))).e2e_speedup <= 1.0


def test_table_has_a_row_per_point():
    rows = table(video=(4096,), taus=(3.0,)).splitlines()
    assert len(rows) == 2 + 2  # header, separator, one row per pair
