"""Every error path of ``specvlm demo``, ``bench`` and ``selfcheck``: one line on stderr, a
non-zero exit, no traceback, and before any model loads (``load_pair`` fails the test if it is
called). Most cases run ``main()`` in this process (fast); a few run the real command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from specvlm.tools import bench, demo
from specvlm.tools.cli import main
from tests.test_video_input import _audio_only, _damaged, _middle_garbage, write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error was found")

    monkeypatch.setattr(demo, "load_pair", refuse)
    monkeypatch.setattr(bench, "load_pair", refuse)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    ok = d / "ok.mp4"
    write_video(ok, 12)
    return {
        "ok": str(ok),
        "audio": _audio_only(d / "sound.mp4"),
        "middle": _damaged(d, "middle.mp4", _middle_garbage),
        "text": _damaged(d, "text.mp4", lambda data: b"not a video"),
        "dir": str(d),
    }


def one_line_error(capsys, argv, message, code=2):
    """Run ``specvlm *argv`` in this process; check the exit code, that stderr is one line
    holding ``message`` and no traceback, and that nothing went to stdout."""
    assert main(argv) == code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert message in lines[0] and "error:" in lines[0], err
    assert "Traceback" not in err and out == ""
    return lines[0]


DEMO_CASES = [
    (["--save-viz", "/nonexistent/dir/x.png"], "the directory /nonexistent/dir does not exist"),
    (["--json", "/nonexistent/x.json"], "the directory /nonexistent does not exist"),
    (["--json", "/tmp"], "--json /tmp is a directory"),
    (["--save-viz", "x.foo"], "must end in .png or .pdf or .svg"),
    (["--save-viz", "/tmp"], "--save-viz /tmp is a directory"),
    (["--selector", "best"], "unknown selector"),
    (["--drop-rate", "1.0"], "--drop-rate must be in"),
    (["--drop-rate", "-0.5"], "--drop-rate must be in"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--frames", "0"], "--frames must be >= 1"),
    (["--tree-size", "0"], "--tree-size must be in"),
    (["--clip", "-1"], "--clip must be >= 0"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--seed", "3"], "--seed seeds sampling"),  # greedy two_stage: nothing to seed
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--top-k", "0"], "--top-k must be >= 1"),
    (["--temperature", "0", "--top-p", "0.9"], "need --temperature > 0"),
    (["--target", "/tmp"], "give both --target and --draft"),
    (["--target", "/tmp", "--draft", "/tmp"], "not a checkpoint directory"),
    (["--device", "nonsense"], "bad --device"),
    (["--threads", "0"], "--threads must be >= 1"),
]


@pytest.mark.parametrize("args,message", DEMO_CASES, ids=[" ".join(a) for a, _ in DEMO_CASES])
def test_demo_argument_errors(capsys, args, message):
    one_line_error(capsys, ["demo", *args], message)


@pytest.mark.parametrize(
    "which,message",
    [
        ("dir", "is a directory, not a video file"),
        ("audio", "has no video stream (its streams: audio)"),
        ("middle", "after frame"),
        ("text", "cannot decode video"),
    ],
)
def test_demo_bad_videos_before_models_load(capsys, videos, which, message):
    line = one_line_error(capsys, ["demo", "--video", videos[which]], message)
    assert "tuple index" not in line


def test_demo_unsupported_checkpoint(capsys, tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    one_line_error(
        capsys,
        ["demo", "--target", str(tmp_path), "--draft", str(tmp_path)],
        "is a 'llama' model; supported: LLaVA-OneVision",
    )


def test_demo_clip_and_video_together(capsys, videos):
    one_line_error(
        capsys, ["demo", "--video", videos["ok"], "--clip", "2"], "--clip picks a generated clip"
    )


def test_device_is_named_as_given(capsys):
    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        pytest.skip("cuda:1 exists here")
    line = one_line_error(capsys, ["demo", "--device", "cuda:1"], "--device cuda:1 given but")
    assert "--device cuda given" not in line
    one_line_error(capsys, ["bench", "--device", "cuda:1"], "--device cuda:1 given but")


BENCH_CASES = [
    (["--out", "/etc/passwd"], "--out /etc/passwd is a file, not a directory"),
    (["--out", "/etc/passwd/results"], "/etc/passwd is a file, not a directory"),
    (["--prompts", "0"], "--prompts must be >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--methods", "specvlm,beam"], "unknown methods ['beam']"),
    (["--methods", "autoregressive,specvlm", "--seed", "2"], "--seed seeds sampling"),
    (["--top-k", "-3"], "--top-k must be >= 1"),
]


@pytest.mark.parametrize("args,message", BENCH_CASES, ids=[" ".join(a) for a, _ in BENCH_CASES])
def test_bench_argument_errors(capsys, tmp_path, args, message):
    out = [] if "--out" in args else ["--out", str(tmp_path / "results")]
    one_line_error(capsys, ["bench", *args, *out], message)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--device", "nonsense"], "bad --device"),
        (["--device", "cpu", "--repeats", "0"], "--repeats must be >= 1"),
    ],
)
def test_selfcheck_argument_errors(capsys, args, message):
    one_line_error(capsys, ["selfcheck", *args], message)


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_unknown_flags_print_the_command_usage(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--bogus", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: specvlm {command} ")
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors == [f"specvlm {command}: error: unrecognized arguments: --bogus 1"]


def test_help_shows_defaults_and_a_clean_description(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and "SpecVLM: lossless speculative decoding" in top
    assert "specvlm COMMAND --help" in top
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: two_stage)", "(default: 32)", "(default: auto)"):
        assert shown in text
    assert "default: accelerate()'s automatic policy chooses both per call" in text
    assert "(default: None)" not in text
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: bench-results)" in text and "(default: 3)" in text


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, "-m", "specvlm.tools.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["bench", "--out", "/etc/passwd"], "is a file, not a directory"),
        (["demo", "--json", "/tmp"], "is a directory"),
        (["demo", "--video", "MIDDLE"], "after frame"),
    ],
)
def test_real_command_line_fails_in_one_line(videos, args, message):
    args = [videos["middle"] if a == "MIDDLE" else a for a in args]
    proc = _cli(*args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert proc.stdout == ""
