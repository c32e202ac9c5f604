"""`specvlm serve` before vLLM starts (no vLLM needed): the server's command line (paths, the
LLaVA-OneVision architectures, video, dtype and CPU defaults, the user's own flags winning),
one-line refusals, the hiding of media packages that cannot load, and the micro pair's
torchvision-free processor. The server itself is tested over HTTP in tests/test_serve_http.py
(.venv-vllm)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from specvlm.tools import cli
from specvlm.tools import serve as launch
from specvlm.tools.common import EMBEDDED, ToolError
from specvlm.vllm_plugin.models import LLAVA_ARCHITECTURE, MICRO_ARCHITECTURE


def _args(*argv: str):
    parser, _ = cli._parsers()
    args, passthrough = parser.parse_known_args(["serve", *argv])
    launch.check_serve_args(args)
    return args, passthrough


def _argv(*argv: str, cpu: bool = True, monkeypatch) -> list[str]:
    monkeypatch.setattr(launch, "cpu_build", lambda: cpu)
    return launch.server_argv(*_args(*argv))


def _flag(argv: list[str], name: str):
    return argv[argv.index(name) + 1]


def test_the_embedded_pair_is_served_with_its_architecture_paths_and_defaults(monkeypatch):
    argv = _argv("micro", "--draft", "micro", monkeypatch=monkeypatch)
    assert argv[0] == str(EMBEDDED / "target") and os.path.isabs(argv[0])
    assert _flag(argv, "--host") == "127.0.0.1" and _flag(argv, "--port") == "8000"
    assert json.loads(_flag(argv, "--hf-overrides")) == {"architectures": [MICRO_ARCHITECTURE]}
    assert _flag(argv, "--dtype") == "float32"
    assert json.loads(_flag(argv, "--media-io-kwargs")) == {"video": {"num_frames": -1}}
    assert _flag(argv, "--gpu-memory-utilization") == str(launch.CPU_MEMORY_SHARE)
    settings = json.loads(_flag(argv, "--additional-config"))["specvlm"]
    assert settings["draft"] == str(EMBEDDED / "draft")
    spec = json.loads(_flag(argv, "--speculative-config"))
    assert spec["num_speculative_tokens"] == 4 and spec["method"] == "custom_class"


def test_without_a_draft_the_target_is_served_alone(monkeypatch):
    argv = _argv("micro", monkeypatch=monkeypatch)
    for flag in ("--speculative-config", "--worker-cls", "--additional-config"):
        assert flag not in argv


def test_the_users_own_flags_win_and_are_passed_on(monkeypatch, tmp_path):
    argv = _argv(
        "micro",
        "--frames",
        "16",
        "--dtype",
        "bfloat16",
        "--gpu-memory-utilization",
        "0.5",
        "--max-num-seqs",
        "4",
        monkeypatch=monkeypatch,
    )
    assert argv.count("--dtype") == 1 and _flag(argv, "--dtype") == "bfloat16"
    assert argv.count("--gpu-memory-utilization") == 1
    assert _flag(argv, "--gpu-memory-utilization") == "0.5"
    assert json.loads(_flag(argv, "--media-io-kwargs")) == {"video": {"num_frames": 16}}
    assert _flag(argv, "--max-num-seqs") == "4"
    own = '{"video": {"num_frames": 8, "fps": 2}}'
    argv = _argv("micro", "--media-io-kwargs", own, monkeypatch=monkeypatch)
    assert argv.count("--media-io-kwargs") == 1 and _flag(argv, "--media-io-kwargs") == own
    # vLLM's default memory share on a GPU build
    assert "--gpu-memory-utilization" not in _argv("micro", cpu=False, monkeypatch=monkeypatch)


def test_relative_paths_are_made_absolute(monkeypatch, tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "llava_onevision"}))
    media = tmp_path / "media"
    media.mkdir()
    monkeypatch.chdir(tmp_path)
    argv = _argv(
        "ckpt",
        "--draft",
        "./ckpt",
        "--allowed-local-media-path",
        "media",
        monkeypatch=monkeypatch,
    )
    assert argv[0] == str(checkpoint)
    assert json.loads(_flag(argv, "--additional-config"))["specvlm"]["draft"] == str(checkpoint)
    assert _flag(argv, "--allowed-local-media-path") == str(media)
    # a LLaVA-OneVision checkpoint other than the pair: vLLM's class with the crash fixed
    assert json.loads(_flag(argv, "--hf-overrides")) == {"architectures": [LLAVA_ARCHITECTURE]}
    assert "--dtype" not in argv
    argv = _argv("ckpt", "--allowed-local-media-path=media", monkeypatch=monkeypatch)
    assert f"--allowed-local-media-path={media}" in argv


def test_a_hub_id_is_passed_on_unchanged(monkeypatch):
    argv = _argv("Qwen/Qwen2.5-VL-32B-Instruct", monkeypatch=monkeypatch)
    assert argv[0] == "Qwen/Qwen2.5-VL-32B-Instruct" and "--hf-overrides" not in argv
    assert "--media-io-kwargs" not in argv  # vLLM's own frame sampling for a real model
    argv = _argv("Qwen/Qwen2.5-VL-32B-Instruct", "--frames", "24", monkeypatch=monkeypatch)
    assert json.loads(_flag(argv, "--media-io-kwargs")) == {"video": {"num_frames": 24}}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["micro", "--port", "0"], "--port must be in 1..65535"),
        (["micro", "--frames", "0"], "--frames must be >= 1"),
        (["micro", "--draft-sampled"], "need --draft"),
        (["micro", "--num-speculative-tokens", "3"], "need --draft"),
        (["micro", "--drop-rate", "0.5", "--mass", "0.3"], "--drop-rate, --mass need --draft"),
        (["micro", "--draft", "micro", "--draft-sampled"], "draft_sampled=True needs vLLM's CUDA"),
        (["micro", "--draft", "~/no/such/dir"], "no such checkpoint directory"),
        (["./nowhere", "--draft", "micro"], "no such checkpoint directory"),
        (["micro", "--draft", "micro", "--drop-rate", "1.5"], "drop_rate must be in [0, 1)"),
        (["micro", "--draft", "micro", "--selector", "best"], "selector must be one of"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(argv, message, monkeypatch):
    monkeypatch.setattr(launch, "cpu_build", lambda: True)
    with pytest.raises(ToolError, match=re.escape(message)) as err:
        launch.server_argv(*_args(*argv))
    assert "\n" not in str(err.value)


def test_a_directory_without_a_config_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ToolError, match="not a checkpoint directory"):
        _argv(str(tmp_path), monkeypatch=monkeypatch)


def test_qwen3_vl_with_a_draft_is_refused_with_the_reason(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    with pytest.raises(ToolError, match="qwen3_vl target is not served with a SpecVLM draft"):
        _argv(str(tmp_path), "--draft", str(tmp_path), monkeypatch=monkeypatch)
    assert _argv(str(tmp_path), monkeypatch=monkeypatch)[0] == str(tmp_path)  # alone: served


def test_the_proposer_refuses_a_qwen3_vl_target_with_the_same_reason():
    from specvlm.vllm_plugin.compat import check_drafted_family

    with pytest.raises(ValueError, match="Qwen3-VL module builds transformers' Qwen3-VL video"):
        check_drafted_family("qwen3_vl")
    for family in ("llava_onevision", "qwen2_5_vl", None):
        check_drafted_family(family)


def test_the_cli_refuses_in_one_line_with_exit_code_2(capsys):
    assert cli.main(["serve", "micro", "--port", "70000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("specvlm serve: error:") and "\n" not in err
    if importlib.util.find_spec("vllm") is None:  # the main environment: vLLM is not installed
        assert cli.main(["serve", "micro", "--draft", "micro"]) == 2
        assert "vLLM is not installed" in capsys.readouterr().err


def _broken_package(root) -> str:
    package = root / "brokenvision"
    package.mkdir()
    (package / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    return "brokenvision"


def test_packages_that_cannot_load_are_found_and_hidden_in_every_fresh_process(
    tmp_path, monkeypatch
):
    """As vLLM's own fresh interpreters see it (``python -m vllm.model_executor.models.registry``
    inspects a model class in one): nothing of specvlm imported, the hiding comes from the
    environment ``specvlm serve`` gives the server; a ``sitecustomize`` it shadows still runs."""
    from specvlm.vllm_plugin.server import hiding_environment

    name = _broken_package(tmp_path)
    other_site = tmp_path / "other_site"
    other_site.mkdir()
    (other_site / "sitecustomize.py").write_text("import builtins\nbuiltins.CHAINED = True\n")
    path = os.pathsep.join([str(tmp_path), str(other_site)])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", path)
    assert launch.unloadable_packages((name, "json", "no_such_package_here")) == [name]
    probe = (
        "import builtins, importlib.util, sys\n"
        f"assert importlib.util.find_spec({name!r}) is None\n"
        "assert 'specvlm' not in sys.modules\n"
        "try:\n"
        f"    import {name}\n"
        "except ImportError:\n"
        "    print('hidden', getattr(builtins, 'CHAINED', False))\n"
    )
    env = hiding_environment(dict(os.environ), [name])
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "hidden True", done.stderr
    # without it the import fails with the package's own error
    done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
    assert "operator torchvision::nms" in done.stderr
    assert hiding_environment({"A": "1"}, []) == {"A": "1"}


def test_a_package_already_imported_cannot_be_hidden():
    from specvlm.vllm_plugin.server import hide_packages

    with pytest.raises(RuntimeError, match="imported before it could be hidden"):
        hide_packages("json")
    assert hide_packages("") == [] and hide_packages(None) == []


def test_the_micro_processor_without_torchvision_equals_the_saved_one():
    from specvlm.micro.processor import load_processor, micro_processor, video_inputs

    path = str(EMBEDDED / "target")
    ours, saved = micro_processor(path), load_processor(path)
    video = np.random.default_rng(0).integers(0, 255, (8, 96, 80, 3), dtype=np.uint8)
    a, b = video_inputs(ours, video, "what colour is it ?"), video_inputs(saved, video, "what ?")
    assert a["pixel_values_videos"].shape == (1, 8, 3, 64, 64)
    assert torch.equal(a["pixel_values_videos"], b["pixel_values_videos"])
    same = video_inputs(saved, video, "what colour is it ?")
    assert torch.equal(a["input_ids"], same["input_ids"])
