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


def test_demo_json_and_figure(pair, tmp_path):
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
        "--seed",
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
    assert rec["video_tokens"] == 128
    # pruning happens only when there is a second token to draft (a tiny model may stop at once)
    assert rec["kept_video_tokens"] == (12 if rec["new_tokens"] > 1 else 128)
    assert rec["selector"] == "two_stage" and rec["drop_rate"] == 0.9
    assert "identical to the target's own greedy answer: yes" in proc.stdout
    assert "time to first token:" in proc.stdout
    assert 0 < rec["target_ttft_s"] and 0 < rec["specvlm_ttft_s"] and rec["repeats"] == 3
    assert png.stat().st_size > 1000


@pytest.mark.parametrize(
    "args,message",
    [
        (["--video", "/nonexistent.mp4"], "video file not found"),
        (["--selector", "best"], "unknown selector"),
        (["--drop-rate", "1.0"], "--drop-rate must be in"),
        (["--drop-rate", "-0.5"], "--drop-rate must be in"),
        (["--max-new-tokens", "0"], "--max-new-tokens"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--repeats", "0"], "--repeats must be >= 1"),
    ],
)
def test_demo_bad_arguments(pair, args, message):
    proc = _cli("demo", "--target", pair[0], "--draft", pair[1], *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_demo_bad_checkpoints(pair, tmp_path):
    proc = _cli("demo", "--target", str(tmp_path), "--draft", pair[1])
    assert proc.returncode == 2 and "not a checkpoint directory" in proc.stderr
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    proc = _cli("demo", "--target", str(tmp_path), "--draft", pair[1])
    assert proc.returncode == 2 and "supported: LLaVA-OneVision" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _cli("demo", "--target", pair[0])
    assert proc.returncode == 2 and "both --target and --draft" in proc.stderr


def test_demo_unreadable_video(pair, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video")
    proc = _cli("demo", "--target", pair[0], "--draft", pair[1], "--video", str(bad))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "video" in proc.stderr


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
