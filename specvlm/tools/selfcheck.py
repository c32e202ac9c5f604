"""Run each kernel on small random inputs, compare with its fp64 PyTorch reference, and time it.

Prints one table row per case; returns False if any case is out of tolerance.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from specvlm_kernels import (
    backend_for,
    prune_video_tokens,
    tree_attention,
    video_attention_scores,
)
from specvlm_kernels import reference as ref

# Error allowed against an fp64 reference: fp32 kernels (fp32 accumulation, exp2 softmax) land
# near 1e-6 on these sizes; fp16 inputs are rounded once more on output (~5e-4 relative).
ATOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@dataclass
class Case:
    op: str
    shape: str
    run: Callable[[], torch.Tensor]
    exact: Callable[[], torch.Tensor]
    atol: float


def _median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _cases(device: torch.device, dtype: torch.dtype) -> list[Case]:
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    def f64(x):
        return x.double()

    # Scores: 12 text rows, 8 query heads over 2 KV heads (GQA 4), 200 keys, video 40..180.
    q, k = randn(1, 8, 12, 64), randn(1, 2, 200, 64)
    scores_case = Case(
        "video_attention_scores",
        "B1 Hq8 Hk2 Lq12 Lk200 D64 video[40:180]",
        lambda: video_attention_scores(q, k, 40, 180),
        lambda: ref.video_attention_scores_ref(f64(q), f64(k), 40, 180),
        1e-5 if dtype == torch.float32 else 1e-4,  # fp32 result; inputs identical
    )
    # Tree attention: 26-node tree over a 300-token prefix.
    n, prefix = 26, 300
    parents = torch.full((n,), -1)  # node 0 hangs off the prefix; parent[i] < i below
    for i in range(1, n):
        parents[i] = int(torch.randint(-1, i, (1,), generator=gen))
    mask = torch.eye(n, dtype=torch.bool)
    for i in range(n):
        j = int(parents[i])
        while j >= 0:
            mask[i, j] = True
            j = int(parents[j])
    mask = mask.to(device)
    tq, tk, tv = randn(1, 8, n, 64), randn(1, 2, prefix + n, 64), randn(1, 2, prefix + n, 64)
    tree_case = Case(
        "tree_attention",
        f"B1 Hq8 Hk2 N{n} L{prefix + n} D64",
        lambda: tree_attention(tq, tk, tv, mask),
        lambda: ref.tree_attention_ref(f64(tq), f64(tk), f64(tv), mask),
        ATOL[dtype],
    )
    # Selection + gather: 4 frames of 6x7 tokens, keep 10%.
    scores = torch.rand(1, 4 * 6 * 7, generator=gen).pow(4).to(device)
    feats = randn(1, 4 * 6 * 7, 32)

    def exact_prune():
        kept, idx = ref.prune_video_tokens_ref(feats, scores, 17, grid=(4, 6, 7))
        return torch.cat([kept.double(), idx[..., None].double()], dim=-1)

    def run_prune():
        kept, idx = prune_video_tokens(feats, scores, 17, grid=(4, 6, 7))
        return torch.cat([kept.double(), idx[..., None].double()], dim=-1)

    prune_case = Case(
        "prune_video_tokens", "B1 Nv168 grid(4,6,7) keep17 C32", run_prune, exact_prune, 0.0
    )
    return [scores_case, tree_case, prune_case]


def run_selfcheck(device: torch.device, repeats: int = 3) -> bool:
    import triton

    backend = backend_for(device)
    if backend == "triton" and device.type == "cpu":
        backend = "triton (interpreter)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"specvlm selfcheck on {name}: backend {backend}, torch {torch.__version__}, "
        f"triton {triton.__version__}"
    )
    if device.type == "cpu":
        print("(CPU timings of the Triton interpreter or reference: not performance numbers)")
    header = f"{'op':<24}{'dtype':<10}{'shape':<40}{'max err':>10}{'tol':>9}{'ms':>9}  ok"
    print(header)
    print("-" * len(header))
    all_ok = True
    dtypes = [torch.float32, torch.float16] + ([torch.bfloat16] if device.type == "cuda" else [])
    for dtype in dtypes:
        for case in _cases(device, dtype):
            out = case.run()
            exact = case.exact()
            finite = bool(torch.isfinite(out).all())
            err = (out.double() - exact.double()).abs().max().item() if out.numel() else 0.0
            ok = finite and out.shape == exact.shape and err <= case.atol
            all_ok &= ok
            ms = _median_ms(case.run, device, repeats)
            dt = str(dtype).replace("torch.", "")
            print(
                f"{case.op:<24}{dt:<10}{case.shape:<40}{err:>10.2e}{case.atol:>9.0e}"
                f"{ms:>9.2f}  {'yes' if ok else 'NO'}"
            )
    print("all kernels match their references" if all_ok else "SOME KERNELS FAILED")
    return all_ok
