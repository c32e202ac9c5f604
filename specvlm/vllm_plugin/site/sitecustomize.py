"""Loaded by every Python process ``specvlm serve`` starts (this directory is first on their
``PYTHONPATH``): hides the packages named in ``SPECVLM_HIDE_PACKAGES`` before anything imports
them, then runs the ``sitecustomize`` this one shadows, if any.

vLLM starts fresh interpreters of its own (``python -m vllm.model_executor.models.registry`` to
inspect a model class; spawned workers), so hiding in the server's process alone is not enough:
every process must take the paths for a missing torchvision instead of failing on a broken one
(specvlm/vllm_plugin/server.py).
"""

import importlib.machinery
import importlib.util
import os
import sys

for _name in os.environ.get("SPECVLM_HIDE_PACKAGES", "").split(","):
    if _name.strip() and _name.strip() not in sys.modules:
        sys.modules[_name.strip()] = None  # import -> ImportError; find_spec -> None

_here = os.path.dirname(os.path.abspath(__file__))
_rest = [p for p in sys.path if os.path.abspath(p or ".") != _here]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None and _spec.loader is not None:  # the one this shadows
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
