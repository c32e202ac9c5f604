"""The pure parts of ``specvlm.tools.gpu_report`` (the whole command runs in CI as
``scripts/gpu_report.sh --tiny``, see ``.ci/run``; its deadline is tested in
``tests/test_gpu_report_deadline.py``): the perf-model fit recovers known fractions, and bench
records meet their analytic expectation by case, in their own regime."""

from __future__ import annotations

import json
from dataclasses import replace

from specvlm.tools.gpu_report import compare, perf
from specvlm.tools.gpu_report.decoders import DECODERS
from specvlm.tools.perf_model import H100, forward_seconds


def _rows(gpu):
    rows = []
    for name, (hidden, inter, layers, heads, kv, vocab, _) in DECODERS.items():
        params = layers * (4 * hidden * hidden + 3 * hidden * inter) + 2 * vocab * hidden
        for context in (4096, 65536):
            for tokens in (1, 48):
                row = dict(
                    model=name,
                    params=params,
                    layers=layers,
                    heads=heads,
                    kv_heads=kv,
                    head_dim=hidden // heads,
                    bytes_per_param=2,
                    context=context,
                    tokens=tokens,
                )
                row["seconds"] = forward_seconds(
                    perf.llm(row), gpu, tokens, context, regime="eager"
                )
                rows.append(row)
    return rows


def test_fit_recovers_the_fractions_of_synthetic_forwards():
    truth = replace(H100, bw_fraction=0.65, tc_fraction=0.4, eager_us=0.5 * 1.25**10)
    fitted, loss, captured = perf.fit_gpu(_rows(truth), H100)
    assert abs(fitted.bw_fraction - 0.65) < 1e-9
    assert abs(fitted.eager_us - truth.eager_us) < 1e-9
    assert loss < 1e-12 and not captured  # no captured rows: none fitted


def test_datasheet_gpu_by_name():
    assert perf.datasheet_gpu("NVIDIA H200").hbm_gbs == 4800.0
    assert perf.datasheet_gpu("NVIDIA H100 80GB HBM3").hbm_gbs == 3350.0
    assert perf.datasheet_gpu("NVIDIA A100-SXM4-80GB").tc_tflops == 312.0
    assert perf.datasheet_gpu("something else").hbm_gbs == H100.hbm_gbs


def test_bench_records_meet_their_expectation_by_case():
    scores = dict(impl="triton", model="qwen2.5-vl-7b", Nv=16384, Lq=64, dtype="bfloat16")
    expected = dict(op="scores", shape=dict(scores, Hq=28))
    assert compare.bench_key(scores) == compare.expected_key(expected)
    tree = dict(impl="static", model="llava-ov-72b", L=32768, N=1, dtype="bfloat16")
    expected = dict(op="tree-static", shape=dict(tree, buffer=65536))
    assert compare.bench_key(tree) == compare.expected_key(expected)
    prune = dict(impl="triton", layout="llava-ov", Nv=65464, keep=6546, C=896)
    assert compare.bench_key(prune) == compare.expected_key(dict(op="prune", shape=prune))
    assert compare.bench_key(dict(prune, impl="eager")) is None


def test_measured_forwards_interpolate_and_extrapolate():
    rows = [
        dict(tokens=n, context=c, seconds=0.001 * n + 1e-6 * c) for n in (1, 8) for c in (100, 300)
    ]
    table = perf.MeasuredForwards(rows)
    assert abs(table.seconds(1, 100) - (0.001 + 1e-4)) < 1e-15  # a measured point
    assert abs(table.seconds(4, 200) - (0.004 + 2e-4)) < 1e-12  # between them (linear)
    assert abs(table.seconds(16, 500) - (0.016 + 5e-4)) < 1e-12  # beyond, along the last segment
    text = perf.measured_projection(
        [
            dict(r, model=m, seconds=r["seconds"] * (1 if m == "tiny-target" else 0.2))
            for m in ("tiny-target", "tiny-draft")
            for r in [
                dict(tokens=n, context=c, seconds=0.001 * n + 1e-6 * c)
                for n in (1, 8, 48)
                for c in (64, 128, 256)
            ]
        ],
        tiny=True,
    )
    assert text.count("tiny-target / tiny-draft") == 3


def _bench(name: str, regime: str, us: float, device: str = "NVIDIA H100 80GB HBM3") -> dict:
    info = dict(impl="triton", layout="flat", Nv=65536, keep=6553, regime=regime)
    return {"name": name, "stats": {"median": us * 1e-6}, "extra_info": dict(info, device=device)}


def test_each_regime_is_held_to_its_own_expectation(tmp_path):
    shape = dict(layout="flat", Nv=65536, keep=6553)
    row = dict(op="select", shape=shape, expected_us=21.7, expected_eager_us=127.8)
    row["launch_bound"] = True
    (tmp_path / "expected.json").write_text(json.dumps([row]))
    records = [_bench("select eager", "eager", 140.0), _bench("select graph", "graph", 30.0)]
    (tmp_path / "bench.json").write_text(json.dumps({"benchmarks": records}))
    table = compare.measured_vs_expected(tmp_path)
    assert "| select eager | eager | 140.0 | 127.8 | 1.10 | yes |" in table
    assert "| select graph | graph | 30.0 | 21.7 | 1.38 | yes |" in table
    assert "CUDA graph, 20 replays" in table


def test_cpu_report_says_the_graph_rows_were_not_run(tmp_path):
    (tmp_path / "expected.json").write_text("[]")
    records = [_bench("select eager", "eager", 9e5, device="cpu (x86_64)")]
    (tmp_path / "bench.json").write_text(json.dumps({"benchmarks": records}))
    table = compare.measured_vs_expected(tmp_path)
    assert "Graph-replay rows: **not run** (no CUDA device" in table
    assert "| select eager | eager | 900000.0 | - | - | - |" in table
