"""The process ``specvlm serve`` becomes: vLLM's OpenAI-compatible API server.

``python -m specvlm.vllm_plugin.server MODEL [vLLM server options]`` is vLLM's own API server
entry (``vllm.entrypoints.launchers.api_server.entry.main``) with one step first: the packages
named in ``SPECVLM_HIDE_PACKAGES`` (set by ``specvlm serve`` to those that cannot be imported
here, see :mod:`specvlm.tools.serve`) are hidden from this process, before anything
imports transformers or vLLM. A hidden package is ``None`` in ``sys.modules``: importing it
raises ``ImportError`` and ``importlib.util.find_spec`` reports it missing, so transformers and
vLLM take their paths for a missing torchvision instead of failing on a broken one. vLLM's
engine processes are forked on the CPU and inherit it; a process started by ``spawn`` imports
this module again as its main module, which hides them again (the step runs at import).
"""

from __future__ import annotations

import os
import sys

HIDE_ENV = "SPECVLM_HIDE_PACKAGES"


def hide_packages(names: str | None) -> list[str]:
    """Hide each comma-separated package of ``names`` from this process (see the docstring)."""
    hidden = [name.strip() for name in (names or "").split(",") if name.strip()]
    for name in hidden:
        if sys.modules.get(name) is not None:
            raise RuntimeError(f"{name} was imported before it could be hidden")
        sys.modules[name] = None
    return hidden


hide_packages(os.environ.get(HIDE_ENV))


def main(argv: list[str] | None = None) -> None:
    from vllm.entrypoints.launchers.api_server.entry import main as serve

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):  # MODEL, as `vllm serve` takes it
        sys.argv = [sys.argv[0], "--model", sys.argv[1], *sys.argv[2:]]
    serve()


if __name__ == "__main__":
    main()
