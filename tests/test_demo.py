"""`specvlm demo` and `specvlm bench` on a tiny trained pair (scripts/train_micro.py --tiny)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # CPU: references
    return subprocess.run(
        [sys.executable, "-m", "specvlm.tools.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("micro")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "scripts", "train_micro.py"),
            "--tiny",
            "--out",
            str(out),
            "--model",
            "both",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(out / "target"), str(out / "draft")


def test_demo_default_shows_auto_beside_both_baselines_and_naive_sd(pair, tmp_path):
    """The default demo: a 32-frame clip (512 video tokens), SpecVLM as ``accelerate()`` makes
    it (the automatic policy) beside the target alone (eager and compiled, its compile untimed
    and reported) and naive SD, every answer the target's, speedups against both baselines."""
    js = tmp_path / "default.json"
    proc = _cli(
        "demo", "--target", pair[0], "--draft", pair[1], "--max-new-tokens", "6", "--json", str(js)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rec = json.loads(js.read_text())
    assert rec["identical"] is True and rec["text"] == rec["target_text"]
    assert rec["frames"] == 32 and rec["video_tokens"] == 512
    assert rec["policy"] == "auto" and rec["capture"] == "auto"
    assert isinstance(rec["captured"], bool) and isinstance(rec["naive_captured"], bool)
    assert rec["compile_s"] > 0 and rec["compiled_e2e_s"] > 0
    assert rec["compiled_e2e_speedup_vs_compiled"] == 1.0
    assert rec["e2e_speedup_vs_compiled"] > 0 and rec["naive_e2e_speedup_vs_compiled"] > 0
    ratio = rec["compiled_e2e_s"] / rec["specvlm_e2e_s"]  # same tokens: per token = per call
    assert rec["e2e_speedup_vs_compiled"] == pytest.approx(ratio)
    if rec["decoded"]:
        for row in ("target alone (generate)", "target compiled", "naive SD (drop 0, 4 nodes)"):
            assert row in proc.stdout
        assert "decode/c" in proc.stdout and "untimed, in none of these times" in proc.stdout
    assert "compiling the target" in proc.stderr


def test_demo_capture_reaches_both_speculative_decoders(pair, accelerate_calls, capsys):
    """--capture goes to SpecVLM and to naive SD alike (the comparison stays fair)."""
    from specvlm.tools import cli, demo

    args = cli._parser().parse_args(
        ["demo", "--target", pair[0], "--draft", pair[1], "--frames", "4"]
        + ["--max-new-tokens", "3", "--repeats", "1", "--no-compile", "--capture", "off"]
    )
    result = demo.run(args)
    assert [call.get("capture", "missing") for call in accelerate_calls] == [False, False]
    assert result.record["capture"] == "off" and result.record["captured"] is False
    assert result.record["compiled_e2e_s"] is None and result.record["compile_s"] is None
    demo.print_record(result.record)
    assert "target compiled" not in capsys.readouterr().out


def test_demo_fixed_drop_rate_json_and_figure(pair, tmp_path):
    """--drop-rate: the fixed mode (drop rate and tree fixed), on the 8-frame clip."""
    target, draft = pair
    js, png = tmp_path / "demo.json", tmp_path / "viz.png"
    proc = _cli(
        "demo",
        "--target",
        target,
        "--draft",
        draft,
        "--max-new-tokens",
        "6",
        "--drop-rate",
        "0.9",
        "--frames",
        "8",
        "--no-compile",
        "--clip",
        "3",
        "--json",
        str(js),
        "--save-viz",
        str(png),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rec = json.loads(js.read_text())
    for key in (
        "identical",
        "mean_accepted_length",
        "decode_speedup",
        "e2e_speedup",
        "video_tokens",
        "kept_video_tokens",
        "text",
        "target_text",
        "selector",
        "drop_rate",
    ):
        assert key in rec
    assert rec["identical"] is True and rec["text"] == rec["target_text"]
    assert rec["mode"] == "greedy" and rec["clip"] == 3 and rec["seed"] is None
    assert rec["video_tokens"] == 128
    # pruning happens only when there is a second token to draft (a tiny model may stop at once)
    assert rec["kept_video_tokens"] == (12 if rec["speculated"] else None)
    assert rec["selector"] == "two_stage" and rec["drop_rate"] == 0.9
    assert rec["policy"] == "fixed" and rec["tree_size"] == (4 if rec["speculated"] else None)
    assert "identical to the target's own greedy answer: yes" in proc.stdout
    assert "first token" in proc.stdout
    assert 0 < rec["target_ttft_s"] and 0 < rec["specvlm_ttft_s"] and rec["repeats"] == 3
    assert 0 < rec["naive_ttft_s"] and rec["naive_e2e_speedup"] > 0  # naive SD, side by side
    assert rec["compiled_e2e_s"] is None and rec["e2e_speedup_vs_compiled"] is None
    assert ("naive SD (drop 0, 4 nodes)" in proc.stdout) == rec["decoded"]
    assert ("SpecVLM (drop 0.9, 4 nodes)" in proc.stdout) == rec["speculated"]
    assert (rec["naive_mean_accepted_length"] is not None) == rec["speculated"]
    assert png.stat().st_size > 1000


def test_demo_max_new_tokens_1_says_nothing_was_speculated(pair, tmp_path):
    js = tmp_path / "one.json"
    proc = _cli(
        "demo",
        "--target",
        pair[0],
        "--draft",
        pair[1],
        "--max-new-tokens",
        "1",
        "--frames",
        "4",
        "--no-compile",
        "--json",
        str(js),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing speculated (--max-new-tokens 1)" in proc.stdout
    assert "tau (tokens" not in proc.stdout and "128 of 128" not in proc.stdout
    assert "side by side" not in proc.stdout and "end-to-end:" in proc.stdout
    rec = json.loads(js.read_text())
    assert rec["speculated"] is False and rec["mean_accepted_length"] is None
    assert rec["decode_speedup"] is None and rec["kept_video_tokens"] is None
    assert rec["frames"] == 4 and rec["video_tokens"] == 64  # --frames sizes the generated clip


def test_demo_samples_with_a_seed(pair, tmp_path):
    """--temperature samples both paths (seeded alike); no identity is claimed or required.
    Under the automatic policy (whose choices follow measured timings) the demo says a seed
    repeats the answer only where the policy chooses alike; with fixed settings the same seed
    gives the same answers."""
    runs = []
    pinned = ("--drop-rate", "0.5", "--tree-size", "4")
    for name, fixed in (("auto", ()), ("a", pinned), ("b", pinned)):
        js = tmp_path / f"{name}.json"
        proc = _cli(
            "demo",
            "--target",
            pair[0],
            "--draft",
            pair[1],
            "--max-new-tokens",
            "8",
            "--temperature",
            "1.5",
            "--top-k",
            "20",
            "--seed",
            "5",
            "--repeats",
            "1",
            "--frames",
            "8",
            "--no-compile",
            "--json",
            str(js),
            *fixed,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "sampling: temperature 1.5, top-k 20, seed 5" in proc.stdout
        assert "is a sample of the target's own distribution" in proc.stdout
        assert "identical to the target's own greedy answer" not in proc.stdout
        note = "the same seed repeats this answer only where the automatic policy"
        assert (note in proc.stdout) == (name == "auto")
        runs.append(json.loads(js.read_text()))
    for rec in runs:
        assert rec["mode"] == "sample" and rec["identical"] is None and rec["seed"] == 5
        assert rec["sampling"] == {"do_sample": True, "temperature": 1.5, "top_k": 20}
    assert runs[0]["policy"] == "auto" and runs[1]["policy"] == runs[2]["policy"] == "fixed"
    assert runs[1]["speculated"] and runs[1]["drop_rate"] == 0.5
    assert runs[1]["text"] == runs[2]["text"]
    assert runs[0]["target_text"] == runs[1]["target_text"] == runs[2]["target_text"]


def test_demo_reads_a_4_3_video_and_draws_it(pair, tmp_path):
    """A 160 x 120 video file: frames sampled from the file, the figure keeps the 4:3 aspect
    and the results are printed before the files are written."""
    from tests.test_video_input import write_video

    video, png = tmp_path / "clip.mp4", tmp_path / "viz.png"
    write_video(video, 50, width=160, height=120)
    proc = _cli(
        "demo",
        "--target",
        pair[0],
        "--draft",
        pair[1],
        "--video",
        str(video),
        "--frames",
        "4",
        "--max-new-tokens",
        "4",
        "--repeats",
        "1",
        "--no-compile",
        "--drop-rate",
        "0.9",
        "--save-viz",
        str(png),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "read 4 frames of" in proc.stderr and f"wrote {png}" in proc.stderr
    assert proc.stdout.startswith("question :")
    assert png.stat().st_size > 1000


def test_bench_quick_writes_results(pair, tmp_path):
    out = tmp_path / "bench"
    proc = _cli(
        "bench",
        "--quick",
        "--target",
        pair[0],
        "--draft",
        pair[1],
        "--out",
        str(out),
        "--prompts",
        "1",
        "--max-new-tokens",
        "4",
        "--methods",
        "autoregressive,specvlm,random",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in results} == {"autoregressive", "specvlm", "random"}
    assert all(r["identical"] is not False for r in results)
    assert (out / "results.csv").exists() and (out / "speedup_vs_video_tokens.png").exists()


def test_demo_says_why_no_figure_was_written(tmp_path, capsys):
    """--save-viz when SpecVLM did not score the video (its policy chose not to prune): no file,
    and a line saying why and how to get one."""
    import argparse

    from specvlm.stats import GenerationStats
    from specvlm.tools.demo import DemoResult, write_outputs

    png = tmp_path / "viz.png"
    args = argparse.Namespace(json=None, save_viz=str(png))
    assert write_outputs(args, DemoResult({}, None, GenerationStats(), 0.4)) == []
    assert not png.exists()
    assert "no figure written" in capsys.readouterr().err
