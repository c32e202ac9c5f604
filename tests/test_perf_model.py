"""specvlm.tools.perf_model: the roofline projection behaves as its formulas say."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from specvlm.tools.fixed_costs import describe
from specvlm.tools.perf_model import (
    DEFAULT_MIX,
    GOALS,
    H100,
    MIXES,
    MODELS,
    PAIRS,
    Scenario,
    break_even_video_tokens,
    calibrated_gpu,
    forward_seconds,
    goal_lines,
    level_widths,
    main,
    project,
    project_policy_tree,
    rates_for_tau,
    regime_table,
    table,
    tau_ratio_to_win,
    with_mix,
)
from specvlm.trees import tree_of_size


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
    assert len(rows) == 2 + len(PAIRS)  # header, separator, one row per pair
    assert {(t, d) for t, d, *_ in PAIRS} == {
        ("llava-ov-72b", "llava-ov-7b"),
        ("llava-ov-72b", "llava-ov-0.5b"),
        ("qwen2.5-vl-32b", "qwen2.5-vl-7b"),
        ("qwen2.5-vl-32b", "qwen2.5-vl-3b"),
    }


def test_naive_sd_is_specvlm_without_pruning():
    s = Scenario("llava-ov-72b", "llava-ov-7b", 4, 1, 16384, drop_rate=0.0)
    p = project(s)
    assert p.naive_decode_s == pytest.approx(p.sd_decode_s)
    assert p.naive_draft_prefill_s == pytest.approx(p.draft_prefill_s)
    assert p.naive_bytes == pytest.approx(p.sd_bytes)
    assert p.naive_e2e_s == pytest.approx(p.sd_e2e_s - p.scoring_s)  # naive SD does not score


@pytest.mark.parametrize("target,draft,tg,dg", [(t, d, tg, dg) for t, d, tg, dg, _ in PAIRS])
def test_pruning_saves_draft_work_and_memory_growing_with_the_video(target, draft, tg, dg):
    ratios = []
    for n in (1024, 16384, 65536):
        p = project(Scenario(target, draft, tg, dg, n))
        assert p.draft_prefill_s < p.naive_draft_prefill_s
        assert p.sd_step_s < p.naive_step_s and p.sd_bytes < p.naive_bytes
        saved = p.naive_draft_prefill_s - p.draft_prefill_s
        assert p.naive_ttft_s - p.sd_ttft_s == pytest.approx(saved - p.scoring_s)
        ratios.append(tau_ratio_to_win(Scenario(target, draft, tg, dg, n)))
    # the longer the video, the more tau pruning may cost and still win
    assert ratios[0].decode > ratios[1].decode > ratios[2].decode
    assert ratios[0].e2e > ratios[1].e2e > ratios[2].e2e
    assert ratios[-1].e2e < ratios[-1].decode
    assert p.sd_ttft_s < p.naive_ttft_s  # at 64k the draft prefill saved outweighs the scoring


def test_tau_ratio_is_where_specvlm_and_naive_sd_tie():
    s = Scenario("qwen2.5-vl-32b", "qwen2.5-vl-7b", 2, 1, 32768, tau_naive=4.0)
    r = tau_ratio_to_win(s)
    tie = project(replace(s, tau=4.0 * r.decode))
    assert tie.sd_decode_s == pytest.approx(tie.naive_decode_s)
    tie = project(replace(s, tau=4.0 * r.e2e))
    assert tie.sd_e2e_s == pytest.approx(tie.naive_e2e_s)


def test_rates_for_tau_reproduce_the_tau_of_the_default_tree():
    from specvlm.policy import tree_tau
    from specvlm.trees import default_tree

    for tau in (1.5, 3.0, 3.9, 5.5):
        assert tree_tau(default_tree(), rates_for_tau(tau)) == pytest.approx(tau, rel=1e-6)
    with pytest.raises(ValueError):
        rates_for_tau(8.0)  # the default tree is 6 deep


@pytest.mark.parametrize("tp", [False, True])
def test_the_policy_tree_is_at_least_as_fast_as_the_default_tree(tp):
    for target, draft, tg, dg, _ in PAIRS:
        s = Scenario(target, draft, tg, dg, 16384, tensor_parallel=tp)
        p, q = project(s), project_policy_tree(s)
        # the policy's estimate of the default tree's speed is the projection's, and it
        # weighs the default tree among others (48 nodes, depth 6)
        assert q.decode_speedup >= p.decode_speedup * 0.999
        assert q.naive_decode_speedup >= p.naive_decode_speedup * 0.999


# ------------------------------------------------------------------------------------------
# Two regimes of fixed cost per layer and forward (issue 24)
# ------------------------------------------------------------------------------------------
def test_a_forwards_fixed_cost_is_its_regimes_per_layer():
    m = MODELS["qwen2.5-vl-7b"]
    eager = forward_seconds(m, H100, 1, 4096, regime="eager")
    captured = forward_seconds(m, H100, 1, 4096, regime="captured")
    assert eager - captured == pytest.approx(m.layers * (H100.eager_us - H100.captured_us) * 1e-6)
    assert forward_seconds(m, H100, 1, 4096) == captured  # the roofline's default: captured
    with pytest.raises(ValueError):
        forward_seconds(m, H100, 1, 4096, regime="compiled")


def test_the_baseline_is_the_target_in_its_own_regime_and_the_draft_its_own():
    s = Scenario("llava-ov-72b", "llava-ov-7b", 4, 1, 16384)
    assert (s.draft_regime, s.target_regime) == DEFAULT_MIX[1:3] == ("captured", "eager")
    eager, default, captured = (project(with_mix(s, mix)) for mix in MIXES)
    assert default.ar_decode_s == pytest.approx(eager.ar_decode_s)  # the target: eager in both
    assert captured.ar_decode_s < default.ar_decode_s
    # the draft's six forwards per step lose their eager cost: the step gets cheaper
    draft = MODELS["llava-ov-7b"]
    forwards = len(level_widths(tree_of_size(48, 6)))  # the pending token + 5 levels
    saved = forwards * draft.layers * (H100.eager_us - H100.captured_us) * 1e-6
    assert eager.sd_step_s - default.sd_step_s == pytest.approx(saved)
    # SpecVLM is fastest per token with both sides captured, whatever the speedup column says
    assert captured.sd_decode_s < default.sd_decode_s < eager.sd_decode_s
    assert default.prefill_s == captured.prefill_s  # prefills run eagerly in every mix


def test_regime_table_has_every_mix_and_says_which_is_the_default():
    rows = regime_table(video=(4096,)).splitlines()
    assert len(rows) == 2 + len(PAIRS)
    assert rows[0].count("naive / SpecVLM") == len(MIXES) and "target eager (default)" in rows[0]


def test_goal_lines_say_met_or_missed_by_the_projected_speedup():
    lines = goal_lines()
    assert len(lines) == len(GOALS) * len(MIXES)
    slow = replace(H100, eager_us=H100.captured_us)  # eager as cheap as captured: no gain
    for line in goal_lines(slow):
        got, goal = (float(x) for x in re.findall(r"([\d.]+)x", line))
        assert line.endswith("met" if got >= goal else "missed")


def test_calibrated_gpu_takes_a_reports_costs_and_overrides_win(tmp_path):
    fit = {"fitted": {"eager_us": 210.0, "captured_us": 11.0}, "captured_measured": True}
    path = tmp_path / "perf_model.json"
    path.write_text(json.dumps(fit))
    gpu, sources = calibrated_gpu(str(path), None, None)
    assert (gpu.eager_us, gpu.captured_us) == (210.0, 11.0)
    assert "GPU report" in sources["eager"] and "GPU report" in sources["captured"]
    gpu, sources = calibrated_gpu(str(path), 250.0, None)
    assert gpu.eager_us == 250.0 and sources["eager"] == "given on the command line"
    path.write_text(json.dumps(dict(fit, captured_measured=False)))  # a partial report
    gpu, sources = calibrated_gpu(str(path), None, None)
    assert gpu.captured_us == H100.captured_us and "captured" not in sources
    text = "\n".join(describe(gpu, sources))
    assert "eager: 210.0 us (fitted" in text and "captured: 8.0 us (assumed" in text


def test_main_prints_the_assumptions_and_both_regimes(capsys):
    main(["--eager-us", "123"])
    out = capsys.readouterr().out
    assert "eager: 123.0 us (given on the command line)" in out
    assert "Default regime: draft captured, target eager" in out
    assert out.count("both captured: naive / SpecVLM") == 2  # layer split, tensor parallel


def test_main_takes_the_detailed_tables_regimes_from_mix(capsys):
    main(["--mix", "both captured"])
    out = capsys.readouterr().out
    assert "device_map=auto (layer split), both captured" in out
    sc = Scenario("llava-ov-72b", "llava-ov-7b", 4, 1, 4096)
    p = project(with_mix(sc, MIXES[2]))
    assert f"| {p.naive_decode_speedup:.2f}x / {p.decode_speedup:.2f}x |" in out
