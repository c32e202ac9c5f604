"""Benchmark: tree attention (Triton split-K kernel) vs eager SDPA with an explicit mask.

CUDA: the attention-layer shapes of the models in ``_common.MODELS`` (llava-ov-0.5b/7b/72b,
qwen2.5-vl-7b/32b, qwen3-vl-8b), batch 1, prefix lengths L in 2k/8k/32k/64k keys, tree sizes N in
1/8/26/64, fp16 and bf16. CPU (Triton interpreter): two tiny smoke shapes.

    PYTHONPATH=. python -m pytest bench/test_bench_tree_attention.py --benchmark-json=tree.json

Metrics (``record_metrics``), the minimal algorithmic counts:
* bytes = K and V read once (``2 * B * Hk * L * D * elt``) + q read + output written
  (``2 * B * Hq * N * D * elt``); the mask and the split-K scratch are not counted.
* flops = ``4 * B * Hq * N * L * D`` (QK^T and PV, 2 flops per multiply-add, every key counted,
  masked or not).
"""

from __future__ import annotations

import pytest
import torch
from _common import MODELS, bench_device, on_gpu, record_metrics, synchronized

from specvlm_kernels.tree_attention import tree_attention

GPU_MODELS = [
    "llava-ov-0.5b", "llava-ov-7b", "llava-ov-72b",
    "qwen2.5-vl-7b", "qwen2.5-vl-32b", "qwen3-vl-8b",
]  # fmt: skip
GPU_LENGTHS = [2048, 8192, 32768, 65536]
GPU_NODES = [1, 8, 26, 64]

if on_gpu():
    SHAPES = [
        # (name, Hq, Hk, D, L, N, dtype)
        (m, MODELS[m].heads, MODELS[m].kv_heads, MODELS[m].head_dim, length, n, dtype)
        for m in GPU_MODELS
        for length in GPU_LENGTHS
        for n in GPU_NODES
        for dtype in (torch.float16, torch.bfloat16)
    ]
else:  # interpreter smoke shapes
    SHAPES = [
        ("smoke-gqa2", 4, 2, 16, 64, 4, torch.float32),
        ("smoke-decode", 2, 1, 32, 100, 1, torch.float32),
    ]


def _shape_id(shape) -> str:
    name, _, _, _, length, n, dtype = shape
    return f"{name}-L{length}-N{n}-{str(dtype).replace('torch.', '')}"


def _tree_mask(n: int, gen: torch.Generator) -> torch.Tensor:
    """Ancestor-or-self mask of a random tree (parent[i] < i, -1 = child of the prefix)."""
    parents = [int(torch.randint(-1, i, (1,), generator=gen)) if i else -1 for i in range(n)]
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while j >= 0:
            mask[i, j] = True
            j = parents[j]
    return mask


def _inputs(shape, device):
    _, hq, hk, d, length, n, dtype = shape
    gen = torch.Generator(device=device).manual_seed(0)  # generate on the device: fast
    b = 1
    kw = dict(generator=gen, device=device, dtype=dtype)
    q = torch.randn(b, hq, n, d, **kw)
    k = torch.randn(b, hk, length, d, **kw)
    v = torch.randn(b, hk, length, d, **kw)
    mask = _tree_mask(n, torch.Generator().manual_seed(0)).to(device)
    return q, k, v, mask


def _metrics(shape):
    _, hq, hk, d, length, n, dtype = shape
    b = 1
    elt = torch.empty((), dtype=dtype).element_size()
    bytes_moved = (2 * b * hk * length * d + 2 * b * hq * n * d) * elt
    flops = 4 * b * hq * n * length * d
    return dict(flops=float(flops), bytes_moved=float(bytes_moved))


def _info(shape):
    name, hq, hk, d, length, n, dtype = shape
    return dict(
        model=name, B=1, Hq=hq, Hk=hk, D=d, L=length, N=n, dtype=str(dtype).replace("torch.", "")
    )


def _sdpa_fn(q, k, v, mask):
    """Eager path: SDPA with an explicit bool mask [B, 1, N, L] (prefix columns all True)."""
    n, length = q.shape[2], k.shape[2]
    full = torch.ones(1, 1, n, length, dtype=torch.bool, device=q.device)
    full[..., length - n :] = mask
    gqa = q.shape[1] != k.shape[1]
    sdpa = torch.nn.functional.scaled_dot_product_attention
    try:
        sdpa(q[:, :, :1], k[:, :, :1], v[:, :, :1], attn_mask=full[..., :1, :1], enable_gqa=gqa)
        return lambda: sdpa(q, k, v, attn_mask=full, enable_gqa=gqa)
    except TypeError:  # torch without enable_gqa: expand the KV heads first (part of the cost)
        group = q.shape[1] // k.shape[1]
        return lambda: sdpa(
            q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), attn_mask=full
        )


@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_bench_tree_attention_triton(benchmark, shape):
    device = bench_device()
    q, k, v, mask = _inputs(shape, device)
    benchmark.group = f"tree_attention-{_shape_id(shape)}"
    fn = synchronized(lambda: tree_attention(q, k, v, mask), device)
    out = fn()  # compile outside the timed region
    benchmark(fn)
    assert out.shape == q.shape
    record_metrics(benchmark, device=device, **_metrics(shape), **_info(shape), impl="triton")


@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_bench_tree_attention_sdpa(benchmark, shape):
    device = bench_device()
    q, k, v, mask = _inputs(shape, device)
    benchmark.group = f"tree_attention-{_shape_id(shape)}"
    fn = synchronized(_sdpa_fn(q, k, v, mask), device)
    out = fn()
    benchmark(fn)
    assert out.shape == q.shape
    record_metrics(benchmark, device=device, **_metrics(shape), **_info(shape), impl="sdpa")
