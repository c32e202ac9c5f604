"""The Triton launches the public kernel functions make at the benches' real-model shapes,
recorded without running anything (for ``bench/compile_check.py`` and ``bench/roofline.py``).

The public functions are called on ``meta`` tensors with ``SPECVLM_KERNELS_BACKEND=triton``:
the launchers choose their GPU configuration for ``meta`` (tile sizes, warps, split counts for
132 SMs) and call ``kernel[grid](...)``; each kernel's ``run`` is replaced by a recorder, so the
grid, the arguments and the launch options are taken from the launchers themselves, never
copied by hand. Import this module before ``specvlm_kernels`` (it sets the backend) in a
process without ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on"):
    raise RuntimeError("record launches in a process without TRITON_INTERPRET (compiled kernels)")
os.environ["SPECVLM_KERNELS_BACKEND"] = "triton"

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import triton  # noqa: E402
from _common import REPORT_MODELS  # noqa: E402

import specvlm_kernels  # noqa: E402

# the modules, not the functions of the same name that the package re-exports
MODULES = tuple(
    importlib.import_module(f"specvlm_kernels.{name}")
    for name in ("attention_scores", "token_select", "tree_attention")
)
META = torch.device("meta")
PREFIX = 32  # system tokens before the video in the scores bench


@dataclass
class Launch:
    kernel: object  # the JITFunction
    grid: tuple
    args: tuple
    kwargs: dict
    case: str
    op: str
    shape: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.kernel.__name__

    @property
    def ctas(self) -> int:
        size = 1
        for g in self.grid:
            size *= int(g)
        return size


def launched_kernels() -> list:
    """Every ``@triton.jit`` kernel of the three op modules that a launcher calls."""
    found = []
    for module in MODULES:
        for name in sorted(vars(module)):
            obj = getattr(module, name)
            if isinstance(obj, triton.runtime.jit.JITFunction) and name.endswith("_kernel"):
                found.append(obj)
    return found


@contextlib.contextmanager
def recording():
    """Replace each kernel's ``run`` by a recorder; yields ``(launches, set_case)``."""
    launches: list[Launch] = []
    current = {"case": "", "op": "", "shape": {}}

    def set_case(op: str, case: str, **shape) -> None:
        current.update(op=op, case=case, shape=shape)

    saved = {}
    for kernel in launched_kernels():
        saved[kernel] = kernel.__dict__.get("run")

        def record(*args, grid, warmup, _kernel=kernel, **kwargs):
            launches.append(
                Launch(
                    _kernel,
                    tuple(grid),
                    args,
                    dict(kwargs),
                    current["case"],
                    current["op"],
                    dict(current["shape"]),
                )
            )

        kernel.run = record
    try:
        yield launches, set_case
    finally:
        for kernel, run in saved.items():
            if run is None:
                del kernel.run
            else:
                kernel.run = run


def _bench_module(name: str):
    return __import__(name)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def scores_cases(models=REPORT_MODELS, fp32: bool = True):
    """(op, case, shape, call) for the scores bench's GPU shapes of ``models`` (with and without
    an accumulation buffer, as the bench and the verifier call it), plus fp32 at 16k."""
    bench = _bench_module("test_bench_attention_scores")
    shapes = [s for s in bench.GPU_SHAPES if s[0] in models]
    if fp32:
        shapes += [
            (m, h, hk, d, nv, lq, torch.float32)
            for (m, h, hk, d, nv, lq, dt) in shapes
            if nv == 16384 and dt == torch.bfloat16
        ]
    for name, hq, hk, d, nv, lq, dtype in shapes:
        lk = PREFIX + nv + lq
        q = torch.empty(1, hq, lq, d, dtype=dtype, device=META)
        k = torch.empty(1, hk, lk, d, dtype=dtype, device=META)
        shape = dict(model=name, Hq=hq, Hk=hk, D=d, Nv=nv, Lq=lq, Lk=lk, dtype=_dtype_name(dtype))
        case = f"{name} Nv={nv} Lq={lq} {_dtype_name(dtype)}"
        yield (
            "scores",
            case,
            shape,
            lambda q=q, k=k, nv=nv: specvlm_kernels.video_attention_scores(
                q, k, PREFIX, PREFIX + nv
            ),
        )
        out = torch.empty(1, nv, dtype=torch.float32, device=META)
        yield (
            "scores",
            case + " out=",
            shape,
            lambda q=q, k=k, nv=nv, out=out: specvlm_kernels.video_attention_scores(
                q, k, PREFIX, PREFIX + nv, out=out
            ),
        )


def select_cases():
    """The selection bench's GPU shapes (fp32 scores), and the prune bench's (bf16 features)."""
    bench = _bench_module("test_bench_token_select")
    for lay, target, drop in bench.GPU_SELECT_SHAPES:
        grid, nv = bench._layout(lay, target)
        keep = int(nv * (1.0 - drop))
        scores = torch.empty(1, nv, dtype=torch.float32, device=META)
        shape = dict(layout=lay, Nv=nv, keep=keep, grid=grid, C=0)
        yield (
            "select",
            f"{lay} Nv={nv} keep={keep}",
            shape,
            lambda s=scores, k=keep, g=grid: specvlm_kernels.select_video_tokens(s, k, grid=g),
        )
    for lay, target, c, dtype in bench.GPU_PRUNE_SHAPES:
        grid, nv = bench._layout(lay, target)
        keep = nv // 10
        scores = torch.empty(1, nv, dtype=torch.float32, device=META)
        feats = torch.empty(1, nv, c, dtype=dtype, device=META)
        shape = dict(layout=lay, Nv=nv, keep=keep, grid=grid, C=c, dtype=_dtype_name(dtype))
        case = f"{lay} Nv={nv} keep={keep} C={c}"
        yield (
            "prune",
            case,
            shape,
            lambda f=feats, s=scores, k=keep, g=grid: specvlm_kernels.prune_video_tokens(
                f, s, k, grid=g
            ),
        )


def tree_cases(models=REPORT_MODELS, fp32: bool = True):
    """The tree bench's GPU shapes of ``models``: the plain call (and, for N = 1, the call
    without a mask, as plain decoding makes it), the static-buffer call with device lengths,
    and fp32 at 8k."""
    bench = _bench_module("test_bench_tree_attention")
    shapes = [s for s in bench.GPU_SHAPES if s[0] in models]
    if fp32:
        shapes += [
            (m, h, hk, d, length, n, torch.float32)
            for (m, h, hk, d, length, n, dt) in shapes
            if length == 8192 and dt == torch.bfloat16
        ]
    for name, hq, hk, d, length, n, dtype in shapes:
        q = torch.empty(1, hq, n, d, dtype=dtype, device=META)
        mask = torch.empty(n, n, dtype=torch.bool, device=META)
        shape = dict(model=name, Hq=hq, Hk=hk, D=d, L=length, N=n, dtype=_dtype_name(dtype))
        case = f"{name} L={length} N={n} {_dtype_name(dtype)}"
        k = torch.empty(1, hk, length, d, dtype=dtype, device=META)
        yield (
            "tree",
            case,
            shape,
            lambda q=q, k=k, m=mask: specvlm_kernels.tree_attention(q, k, k, m),
        )
        if n == 1:  # plain decoding: no mask (the causal specialisation)
            yield (
                "tree-causal",
                case + " causal",
                shape,
                lambda q=q, k=k: specvlm_kernels.tree_attention(q, k, k),
            )
        if dtype != torch.float32:
            buf = max(bench.STATIC_BUFFER, length)
            kb = torch.empty(1, hk, buf, d, dtype=dtype, device=META)
            lengths = torch.empty(1, dtype=torch.int32, device=META)
            static = dict(shape, buffer=buf)
            yield (
                "tree-static",
                case + f" static {buf}",
                static,
                lambda q=q, k=kb, m=mask, n=lengths: specvlm_kernels.tree_attention(
                    q, k, k, m, lengths=n
                ),
            )


def all_cases(models=REPORT_MODELS):
    yield from scores_cases(models)
    yield from select_cases()
    yield from tree_cases(models)


def record_all(models=REPORT_MODELS) -> list[Launch]:
    """Call every case on ``meta`` tensors and return the launches."""
    with recording() as (launches, set_case):
        for op, case, shape, call in all_cases(models):
            set_case(op, case, **shape)
            call()
    return launches
