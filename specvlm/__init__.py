"""SpecVLM: lossless verifier-guided speculative decoding for video LLMs.

``specvlm.accelerate((target, draft))`` wraps a big and a small model of one family
(LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL); its ``generate`` returns exactly the target's greedy
output. The kernels it uses live in :mod:`specvlm_kernels`.

Every public name is loaded on first use (PEP 562): importing a submodule such as
``specvlm.tools.cli`` must not define the Triton kernels, which read ``TRITON_INTERPRET`` once,
before the CLI has chosen their backend; nor import torch, so that the CLI refuses a wrong
argument before torch loads and the GPU report's runner (``specvlm.tools.gpu_report``) starts
its steps within its deadline (``Tree``, ``chain`` and ``default_tree`` come from
:mod:`specvlm.trees`, which imports torch). ``accelerate`` and ``SpeculativeDecoder`` come from
:mod:`specvlm.speculative_decoder`; ``AutoPolicy`` from :mod:`specvlm.policy`.
"""

import importlib

_TREES = ("Tree", "chain", "default_tree")
__all__ = [
    "AutoPolicy", "GenerationStats", "SpeculativeDecoder", "Tree", "accelerate", "chain",
    "default_tree",
]  # fmt: skip
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _TREES or name == "trees":
        trees = importlib.import_module("specvlm.trees")  # binds specvlm.trees too
        globals().update({n: getattr(trees, n) for n in _TREES})
        return trees if name == "trees" else globals()[name]
    if name == "AutoPolicy":  # the automatic policy, e.g. with some settings pinned
        from specvlm.policy import AutoPolicy

        globals()["AutoPolicy"] = AutoPolicy
        return AutoPolicy
    if name not in ("GenerationStats", "SpeculativeDecoder", "accelerate"):
        raise AttributeError(f"module 'specvlm' has no attribute {name!r}")
    from specvlm.speculative_decoder import GenerationStats, SpeculativeDecoder, accelerate

    names = {"GenerationStats": GenerationStats, "SpeculativeDecoder": SpeculativeDecoder}
    globals().update(names, accelerate=accelerate)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
