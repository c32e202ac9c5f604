"""A wrong argument to ``specvlm`` is refused before torch or transformers are imported.

Each case runs the command line in a fresh interpreter: once as ``python -m specvlm.tools.cli``
(exit code 2, one error line on stderr, nothing on stdout), and once through a wrapper that
calls ``cli.main`` and then reports which heavy modules ``sys.modules`` holds. No timing is
asserted: how long an error takes is measured, not tested (the report of issue 23 has the
numbers)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "transformers", "triton", "specvlm_kernels", "vllm")
WRAPPER = (
    "import json, sys\n"
    "from specvlm.tools.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as exit:\n"
    "    code = exit.code\n"
    f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
    "print(json.dumps({'code': code, 'heavy': heavy}))\n"
)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("light")
    (d / "not_a_video.mp4").write_bytes(b"not a video")
    llama = d / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    broken = d / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    return {
        "dir": str(d),
        "garbage": str(d / "not_a_video.mp4"),
        "llama": str(llama),
        "broken": str(broken),
    }


HAVE_AV = importlib.util.find_spec("av") is not None

# (argv, a part of the error line); DIR, GARBAGE, LLAMA and BROKEN name the fixture's paths
ARGUMENT_ERRORS = [
    (["demo", "--frames", "0"], "--frames must be >= 1"),
    (["demo", "--drop-rate", "1.5"], "--drop-rate must be in [0, 1)"),
    (["demo", "--selector", "best"], "unknown selector 'best'"),
    (["demo", "--top-p", "2"], "--top-p must be in (0, 1]"),
    (["demo", "--device", "tpu"], "bad --device 'tpu'"),
    (["demo", "--device", "cuda:x"], "bad --device 'cuda:x'"),
    (["demo", "--threads", "0"], "--threads must be >= 1"),
    (["demo", "--video", "/nonexistent/clip.mp4"], "video file not found"),
    (["demo", "--video", "DIR"], "is a directory, not a video file"),
    # without PyAV (the GPU machines' image) the same file is refused for that reason
    (["demo", "--video", "GARBAGE"], "cannot decode video" if HAVE_AV else "needs PyAV"),
    (["demo", "--json", "/nonexistent/x.json"], "does not exist"),
    (["demo", "--save-viz", "x.foo"], "must end in .png or .pdf or .svg"),
    (["demo", "--target", "DIR"], "give both --target and --draft"),
    (["demo", "--target", "DIR", "--draft", "DIR"], "not a checkpoint directory"),
    (["demo", "--target", "LLAMA", "--draft", "LLAMA"], "is a 'llama' model; supported"),
    (["demo", "--target", "BROKEN", "--draft", "BROKEN"], "cannot read config.json"),
    (["bench", "--repeats", "0"], "--repeats must be >= 1"),
    (["bench", "--methods", "specvlm,beam"], "unknown methods ['beam']"),
    (["bench", "--out", "/etc/passwd"], "is a file, not a directory"),
    (["selfcheck", "--repeats", "0"], "--repeats must be >= 1"),
    (["selfcheck", "--device", "nonsense"], "bad --device"),
    (["vllm-args", "--draft", "d", "--drop-rate", "2"], "drop_rate must be in [0, 1)"),
    (["vllm-args", "--draft", "d", "--selector", "best"], "selector must be one of"),
    (["vllm-args", "--draft", "d", "--selector", "semantic"], "reads the draft's video features"),
]
# refused by argparse itself: the command's usage, then one error line
PARSER_ERRORS = [
    (["demo", "--bogus"], "unrecognized arguments: --bogus"),
    (["demo", "--frames", "many"], "invalid int value: 'many'"),
    (["demo", "--dtype", "int8"], "invalid choice: 'int8'"),
    (["bench", "--repeats"], "expected one argument"),
    (["demo", "--capture", "always"], "invalid choice: 'always'"),
    (["bench", "--capture", "yes"], "invalid choice: 'yes'"),
]
IDS = [" ".join(argv) for argv, _ in ARGUMENT_ERRORS + PARSER_ERRORS]


def _argv(argv: list[str], paths: dict) -> list[str]:
    return [paths.get(a.lower(), a) if a.isupper() else a for a in argv]


def _run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    # outside the repository, without TRITON_INTERPRET, as a user's shell runs it; this
    # checkout's specvlm first on the path
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )


@pytest.mark.parametrize("argv,message", ARGUMENT_ERRORS + PARSER_ERRORS, ids=IDS)
def test_an_argument_error_is_one_line_from_the_command_line(argv, message, paths, tmp_path):
    proc = _run(["-m", "specvlm.tools.cli", *_argv(argv, paths)], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert errors[0].startswith(f"specvlm {argv[0]}: error: ")
    if (argv, message) in ARGUMENT_ERRORS:  # not argparse's: no usage either
        assert lines == errors, proc.stderr
    else:
        assert lines[0].startswith(f"usage: specvlm {argv[0]} ") and lines[-1] == errors[0]


@pytest.mark.parametrize("argv,message", ARGUMENT_ERRORS + PARSER_ERRORS, ids=IDS)
def test_an_argument_error_imports_no_torch_and_no_transformers(argv, message, paths, tmp_path):
    proc = _run(["-c", WRAPPER, *_argv(argv, paths)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 2 and message in proc.stderr, proc.stderr
    assert result["heavy"] == [], f"imported before the error: {result['heavy']}"


def test_the_wrapper_does_see_heavy_imports(tmp_path):
    """The check can fail: a torch import in place of the command is seen."""
    code = WRAPPER.replace("code = main(sys.argv[1:])", "import torch; code = 2")
    proc = _run(["-c", code], tmp_path)
    assert json.loads(proc.stdout.splitlines()[-1])["heavy"] == ["torch"]


def test_the_light_names_are_the_librarys():
    """specvlm.names (imports nothing) lists what the library defines."""
    from specvlm import names, selectors
    from specvlm.families import FAMILIES

    assert names.SELECTORS == selectors.NAMES == tuple(selectors.BUILT_IN)
    built = {name: selectors.resolve(name, mass=0.4, seed=0) for name in names.SELECTORS}
    assert names.FEATURE_SELECTORS == tuple(
        n for n, s in built.items() if selectors.needs_features(s)
    )
    assert names.FAMILIES == {t: f.display_name for t, f in FAMILIES.items()}


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("on", True), ("off", False)])
def test_capture_option_maps_to_accelerates_values(value, expected):
    """--capture's spellings are accelerate()'s capture= values; another value (a caller of
    ``main`` that skipped argparse) is refused in one line."""
    import argparse

    from specvlm.tools.arguments import capture_option
    from specvlm.tools.common import ToolError

    result = capture_option(argparse.Namespace(capture=value))
    assert result == expected and type(result) is type(expected)
    with pytest.raises(ToolError, match="--capture must be one of auto, on, off"):
        capture_option(argparse.Namespace(capture="always"))
