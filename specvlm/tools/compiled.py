"""The strongest stock baseline: the target's own ``generate`` with transformers' static cache
and its decode forward compiled by ``torch.compile`` (``autoregressive_compiled``).

transformers compiles the decode step of ``generate`` itself when the cache is compileable
(``cache_implementation="static"``) and the device is one it compiles on by default (CUDA, XPU,
...). On other devices (the CPU) it compiles only when the :class:`~transformers.CompileConfig`
says so with its ``_compile_all_devices`` flag (how transformers' own tests compile on a CPU);
:func:`compiled_generate_kwargs` sets it, so the baseline is transformers' own compiled path on
every device, not a forward compiled here. transformers keeps the compiled call on the model
(``model._compiled_call``), as it does for every user of ``compile_config``; the model's
weights, config and eager ``generate`` are unchanged.

A compile costs seconds (5-20 s per shape on a CPU), and ``torch.compile`` compiles again for
new shapes (the static cache's length is the prompt's plus ``max_new_tokens``), so
:func:`warm_up` makes one untimed call per shape before a timed one and returns how long it took;
callers report those seconds apart from the decode times.
"""

from __future__ import annotations

import time
import weakref

import torch

__all__ = ["compiled_generate_kwargs", "warm_up"]

# model -> {shape key: seconds of the untimed call that compiled that shape}
_WARM: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_generate_kwargs() -> dict:
    """``generate`` options of the compiled baseline: a static cache and a ``CompileConfig``
    that compiles the decode forward on every device, the CPU included."""
    from transformers import CompileConfig

    config = CompileConfig()
    config._compile_all_devices = True  # transformers' own switch for compiling off CUDA
    return {"cache_implementation": "static", "compile_config": config}


def shape_key(inputs: dict, gen: dict) -> tuple:
    """What a compiled ``generate`` call's graphs depend on besides the model: the shapes and
    dtypes of the tensor inputs, and the options (the static cache's length, the mode)."""
    tensors = tuple(
        (name, tuple(value.shape), str(value.dtype), str(value.device))
        for name, value in sorted(inputs.items())
        if isinstance(value, torch.Tensor)
    )
    options = tuple(sorted((k, repr(v)) for k, v in gen.items() if k != "compile_config"))
    return (tensors, options)


def warm_up(model, inputs: dict, gen: dict) -> float:
    """One untimed compiled ``generate`` call on ``inputs`` with ``gen`` (the same shapes as
    the timed calls that follow), unless this shape was warmed up before in this process.
    Returns its seconds (the compile included); 0.0 when the shape was already warm."""
    warm = _WARM.setdefault(model, {})
    key = shape_key(inputs, gen)
    if key in warm:
        return 0.0
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(**inputs, **gen, **compiled_generate_kwargs())
    warm[key] = seconds = time.perf_counter() - start
    return seconds
