"""The GPU report's two regimes (issue 24) on the CPU: the captured forward's static-cache path
computes what the eager path computes, the perf-model fit recovers both fixed costs, and a report
without captured rows (a CPU run, a failed or cut-short capture) keeps the assumed one."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from specvlm.tools.fixed_costs import report_costs
from specvlm.tools.gpu_report import decoders, perf
from specvlm.tools.perf_model import H100, forward_seconds
from specvlm.tools.static_forward import median_seconds, static_forward

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return decoders.build_decoder(decoders.TINY_DECODERS["tiny-target"], CPU, torch.float32)


@torch.no_grad()
def test_static_forward_gives_the_eager_forwards_logits_and_replays_the_same(tiny):
    from specvlm.decoder import decoder_forward

    context, n = 20, 5
    torch.manual_seed(1)  # the same random cache and embeddings, drawn in the same order
    call = static_forward(tiny.model, tiny.lm_head, context, n, CPU, torch.float32)
    torch.manual_seed(1)
    cache = decoders._fill_cache(tiny, context, CPU, torch.float32)
    embeds = torch.randn(1, n, tiny.config.hidden_size)
    positions = torch.arange(context, context + n)[None]
    eager = decoder_forward(
        tiny.model, tiny.lm_head, cache, embeds, positions, None, logits_rows=slice(None)
    )
    first, second = call(), call()  # the second replays over the same context, not context + n
    torch.testing.assert_close(first, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(second, first)
    assert median_seconds(call, CPU, 3) > 0


@torch.no_grad()
def test_time_captured_times_every_node_count_through_the_given_capture(tiny):
    captured = []

    def capture(call, device):
        captured.append(device)
        return call

    times = decoders.time_captured(tiny, 16, (1, 4), CPU, torch.float32, 2, capture=capture)
    assert set(times) == {1, 4} and all(t > 0 for t in times.values())
    assert captured == [CPU, CPU]
    rows = decoders._rows(
        "tiny-target",
        decoders.TINY_DECODERS["tiny-target"],
        tiny,
        times,
        16,
        torch.float32,
        "captured",
    )
    assert {r["regime"] for r in rows} == {"captured"} and {r["tokens"] for r in rows} == {1, 4}


def _rows(gpu, regimes=("eager", "captured")):
    rows = []
    for name, (hidden, inter, layers, heads, kv, vocab, _) in decoders.DECODERS.items():
        params = layers * (4 * hidden * hidden + 3 * hidden * inter) + 2 * vocab * hidden
        for regime in regimes:
            for context in (4096, 65536):
                for tokens in (1, 48):
                    row = dict(model=name, role=decoders.ROLES[name], params=params, layers=layers)
                    row.update(heads=heads, kv_heads=kv, head_dim=hidden // heads)
                    row.update(bytes_per_param=2, context=context, tokens=tokens, regime=regime)
                    row["seconds"] = forward_seconds(
                        perf.llm(row), gpu, tokens, context, regime=regime
                    )
                    rows.append(row)
    return rows


def test_fit_recovers_both_fixed_costs():
    truth = replace(H100, bw_fraction=0.65, tc_fraction=0.4)
    truth = replace(truth, eager_us=perf.FIXED_GRID[27], captured_us=perf.FIXED_GRID[9])
    fitted, loss, captured = perf.fit_gpu(_rows(truth), H100)
    assert captured and loss < 1e-12
    assert fitted.eager_us == pytest.approx(truth.eager_us)
    assert fitted.captured_us == pytest.approx(truth.captured_us)


def test_a_report_without_captured_rows_keeps_the_assumed_captured_cost(tmp_path):
    truth = replace(H100, eager_us=perf.FIXED_GRID[26], captured_us=perf.FIXED_GRID[3])
    rows = _rows(truth, ("eager",))
    rows.append(dict(model="qwen2.5-vl-7b", role="target", regime="captured", error="boom"))
    (tmp_path / "decoders.json").write_text(json.dumps(rows))
    detail, files = perf.run(tmp_path, tiny=False)
    assert "captured not measured" in detail
    fit = json.loads((tmp_path / "perf_model.json").read_text())
    assert fit["captured_measured"] is False
    assert fit["fitted"]["captured_us"] == H100.captured_us
    costs = report_costs(tmp_path / "perf_model.json")
    assert costs == {"eager": pytest.approx(truth.eager_us)}
    page = (tmp_path / "perf_model.md").read_text()
    assert "captured_us not measured" in page and "failed: boom" in page
    assert "Default regime: draft captured, target eager" in page


def test_a_report_with_captured_rows_projects_both_regimes(tmp_path):
    truth = replace(H100, eager_us=perf.FIXED_GRID[26], captured_us=perf.FIXED_GRID[3])
    (tmp_path / "decoders.json").write_text(json.dumps(_rows(truth)))
    perf.run(tmp_path, tiny=False)
    costs = report_costs(tmp_path / "perf_model.json")
    assert costs["captured"] == pytest.approx(truth.captured_us)
    page = (tmp_path / "perf_model.md").read_text()
    assert "Decode speedups on the measured captured forwards" in page
    assert page.count("both captured: naive / SpecVLM") == 2  # datasheet and fitted GPUs


def test_summary_counts_each_regime_and_names_failed_captures():
    rows = [dict(regime="eager", seconds=1.0)] * 3 + [dict(regime="captured", seconds=1.0)]
    rows.append(dict(model="m", regime="captured", error="x"))
    cuda = torch.device("cuda")  # a device object only: no CUDA call
    assert (
        decoders.summary(rows, cuda)
        == "3 eager and 1 captured forwards timed; capture failed for m"
    )
    assert "not run, no CUDA device" in decoders.summary(rows[:3], CPU)
