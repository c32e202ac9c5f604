"""The process ``specvlm serve`` becomes: vLLM's OpenAI-compatible API server.

``python -m specvlm.vllm_plugin.server MODEL [vLLM server options]`` is vLLM's own API server
entry (``vllm.entrypoints.launchers.api_server.entry.main``), run in an environment from
:func:`hiding_environment`: the packages that cannot be imported here (found by ``specvlm
serve``, :mod:`specvlm.tools.serve`) are hidden from it and from every Python process it starts.

A hidden package is ``None`` in ``sys.modules``: importing it raises ``ImportError`` and
``importlib.util.find_spec`` reports it missing, so transformers and vLLM take their paths for a
missing torchvision instead of failing on a broken one. The hiding must happen before anything
imports them, in every process, including the fresh interpreters vLLM starts (it inspects a
model class in ``python -m vllm.model_executor.models.registry``): so the environment puts
``specvlm/vllm_plugin/site`` first on ``PYTHONPATH``, whose ``sitecustomize`` hides them at
interpreter start (and then runs any ``sitecustomize`` it shadows). This module hides them too
when imported, for a process started without that path.
"""

from __future__ import annotations

import os
import sys

HIDE_ENV = "SPECVLM_HIDE_PACKAGES"
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site")


def hiding_environment(env: dict, hidden: list[str]) -> dict:
    """``env`` for a process tree that hides ``hidden`` in every Python process."""
    if not hidden:
        return dict(env)
    path = env.get("PYTHONPATH")
    return {
        **env,
        HIDE_ENV: ",".join(hidden),
        "PYTHONPATH": SITE_DIR + (os.pathsep + path if path else ""),
    }


def hide_packages(names: str | None) -> list[str]:
    """Hide each comma-separated package of ``names`` from this process (see the docstring)."""
    hidden = [name.strip() for name in (names or "").split(",") if name.strip()]
    for name in hidden:
        if sys.modules.get(name, None) is not None:
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
