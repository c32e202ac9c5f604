"""specvlm.tools.bench: sweeps, merged records, JSON/CSV/plots, on tiny random models."""

from __future__ import annotations

import csv
import json

import pytest

from specvlm.tools.bench import (
    FIELDS,
    SweepPoint,
    run_sweeps,
    sweep_points,
    write_results,
)
from specvlm.trees import tree_of_size
from tests import tiny_models as tm


class TinyWorkload:
    def __init__(self, family="qwen2_5_vl"):
        self.family = family
        self.target, self.draft = tm.make_pair(family)

    def inputs(self, frames, seed):
        return tm.make_inputs(self.family, self.target, frames=frames, seed=seed)


@pytest.fixture(autouse=True)
def _setup(monkeypatch):
    monkeypatch.setenv("SPECVLM_KERNELS_BACKEND", "reference")
    with tm.single_threaded():
        yield


def test_sweep_writes_json_csv_and_plots(tmp_path):
    points = [
        SweepPoint("drop_rate", 0.5, 2, 8),
        SweepPoint("drop_rate", 0.9, 2, 8),
        SweepPoint("frames", 0.9, 1, 8),
        SweepPoint("frames", 0.9, 3, 8),
    ]
    calls = []
    results = run_sweeps(
        TinyWorkload(),
        points,
        prompts=2,
        max_new_tokens=5,
        methods=("autoregressive", "specvlm", "random"),
        progress=calls.append,
    )
    assert len(calls) == 8 and len(results) == 12
    for rec in results:
        assert set(FIELDS) <= set(rec)
        assert rec["identical"] is True and rec["error"] is None
        assert rec["new_tokens"] == 10  # 2 prompts x 5 tokens
    frames = {r["frames"]: r["video_tokens"] for r in results if r["sweep"] == "frames"}
    assert frames[3] == 3 * frames[1]
    paths = write_results(results, str(tmp_path))
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == [
        "report.md",
        "results.csv",
        "results.json",
        "speedup_vs_video_tokens.png",
        "tau_vs_drop_rate.png",
    ]  # no tree-size point here: no tree-size plot
    report = (tmp_path / "report.md").read_text()
    assert (
        "do not edit by hand" in report
        and "![tau_vs_drop_rate.png](tau_vs_drop_rate.png)" in report
    )
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 12 and all(line.endswith("| yes |") for line in table[1:])
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 12 and rows[0]["method"] == "autoregressive"


def test_random_ablation_draws_a_subset_per_input(monkeypatch):
    """Each input of a sweep point gets its own random subset (seed = the input's seed), so the
    ablation is not one fixed set of token positions for every clip."""
    import specvlm
    from specvlm.tools import bench

    seeds = []
    real = specvlm.accelerate

    def spy(models, **kwargs):
        if kwargs.get("selector") == "random":
            seeds.append(kwargs["seed"])
        return real(models, **kwargs)

    monkeypatch.setattr(specvlm, "accelerate", spy)
    results = bench.run_sweeps(
        TinyWorkload(),
        [SweepPoint("drop_rate", 0.9, 2, 8)],
        prompts=3,
        max_new_tokens=3,
        repeats=2,
        methods=("autoregressive", "random"),
    )
    assert seeds == [0, 0, 1, 1, 2, 2]  # 3 inputs x 2 repeats: the same subset per input
    assert all(r["identical"] is True for r in results)


def test_merged_records_keep_every_repeat_and_plot_every_sweep(tmp_path):
    """Each repeat's times are summed over the clips (``runs``), speedups per repeat give the
    error bars; the summary table has a row per point and method; a tree-size sweep gets its
    own plot."""
    from specvlm.tools.bench import summary_table

    points = [SweepPoint("tree_size", 0.9, 2, 4), SweepPoint("tree_size", 0.9, 2, 8)]
    results = run_sweeps(
        TinyWorkload(),
        points,
        prompts=2,
        max_new_tokens=4,
        repeats=2,
        methods=("autoregressive", "specvlm"),
    )
    for rec in results:
        assert rec["prompts"] == 2 and rec["repeats"] == 2 and len(rec["runs"]) == 2
        assert all(run["new_tokens"] == 8 for run in rec["runs"])  # 2 clips x 4 tokens
        assert rec["decode_s"] <= min(run["decode_s"] for run in rec["runs"]) + 1e-12
        assert len(rec["decode_speedup_runs"]) == 2 and len(rec["tau_per_prompt"]) == (
            2 if rec["method"] == "specvlm" else 0
        )
    table = summary_table(results).splitlines()
    assert len(table) == 2 + 4 and table[0].split()[:3] == ["sweep", "drop", "frames"]
    assert all(line.rstrip().endswith("yes") for line in table[2:])
    paths = write_results(results, str(tmp_path), {"hardware": "a test CPU", "mode": "greedy"})
    assert str(tmp_path / "tree_size.png") in paths


def test_sweep_points_and_trees():
    quick = sweep_points(True)
    assert {p.sweep for p in quick} == {"drop_rate", "frames", "tree_size"}
    for sweep in ("drop_rate", "frames", "tree_size"):  # lines of at least 3 points
        assert sum(p.sweep == sweep for p in quick) >= 3
    assert tree_of_size(48).size == 48 and tree_of_size(8).size == 8
    assert tree_of_size(1).size == 1


def test_frames_sweep_reaches_the_longest_clip():
    frames = [p.frames for p in sweep_points(True, longest=61) if p.sweep == "frames"]
    assert frames == [4, 8, 16, 32, 61]  # the embedded pair: 61 frames fit 1024 positions
    assert [p.frames for p in sweep_points(True, longest=10) if p.sweep == "frames"] == [4, 8, 10]
    assert [p.frames for p in sweep_points(True) if p.sweep == "frames"] == [4, 8, 16]


def test_max_frames_of_the_embedded_pair():
    import torch

    from specvlm.tools.bench import CheckpointWorkload
    from specvlm.tools.common import EMBEDDED

    w = CheckpointWorkload(
        str(EMBEDDED / "target"), str(EMBEDDED / "draft"), torch.device("cpu"), "describe ."
    )
    longest = w.max_frames(24)
    limit = w.target.config.get_text_config().max_position_embeddings
    assert w.inputs(longest, 0)["input_ids"].shape[1] + 24 <= limit
    assert w.inputs(longest + 1, 0)["input_ids"].shape[1] + 24 > limit


def _fake(method, decode_s, e2e_s, **extra):
    rec = {
        "method": method,
        "mode": "greedy",
        "mean_accepted_length": None,
        "error": None,
        "new_tokens": 5,
        "decode_s": decode_s,
        "e2e_s": e2e_s,
        "ttft_s": e2e_s - decode_s,
        "peak_memory_bytes": None,
        "identical": True,
        "runs": [{"new_tokens": 5, "decode_s": decode_s, "e2e_s": e2e_s}],
    }
    return dict(rec, **extra)


def test_merged_speedups_against_both_baselines_and_the_warm_up_apart(tmp_path):
    """Every merged record has its speedups against eager ``generate`` and against the compiled
    baseline; the compiled baseline's warm-up seconds are summed over the clips, kept out of
    its times, and named in the report; the report and summary show both speedups."""
    from specvlm.tools.bench import _merge, markdown_report, summary_table

    clip = [
        _fake("autoregressive", 0.8, 1.0),
        _fake("autoregressive_compiled", 0.4, 0.6, warmup_s=12.0),
        _fake("auto", 0.2, 0.4, captured=False),
    ]
    again = [
        _fake("autoregressive", 0.8, 1.0),
        _fake("autoregressive_compiled", 0.4, 0.6, warmup_s=0.0),
        _fake("auto", 0.2, 0.4, captured=False),
    ]
    merged = {r["method"]: r for r in _merge([clip, again])}
    auto, compiled = merged["auto"], merged["autoregressive_compiled"]
    assert auto["decode_speedup"] == pytest.approx(4.0) and auto["e2e_speedup"] == 2.5
    assert auto["decode_speedup_vs_compiled"] == pytest.approx(2.0)
    assert auto["e2e_speedup_vs_compiled"] == pytest.approx(1.5)
    assert compiled["decode_speedup"] == pytest.approx(2.0)
    assert compiled["decode_speedup_vs_compiled"] == pytest.approx(1.0)
    assert compiled["warmup_s"] == 12.0 and compiled["decode_s"] == pytest.approx(0.8)
    assert auto["captured"] is False and auto["warmup_s"] is None
    rows = [
        dict(r, sweep="frames", frames=32, tree_size=48, drop_rate=0.9) for r in merged.values()
    ]
    report = markdown_report(rows, {"mode": "greedy"}, [])
    assert "| decode vs compiled | e2e vs compiled |" in report
    assert "| auto | - | 4.00x | 2.50x | 2.00x | 1.50x |" in report
    assert "took 12.0 s in all" in report
    assert summary_table(rows).splitlines()[0].split()[7:11] == [
        "decode",
        "e2e",
        "decode/c",
        "e2e/c",
    ]
    alone = {r["method"]: r for r in _merge([clip[::2]])}  # no compiled baseline: no ratio
    assert alone["auto"]["decode_speedup_vs_compiled"] is None
