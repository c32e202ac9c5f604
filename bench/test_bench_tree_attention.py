"""Benchmark: tree attention (Triton split-K kernel) vs eager SDPA with an explicit mask.

CUDA: the attention-layer shapes of the models in ``_common.MODELS`` (llava-ov-0.5b/7b/72b,
qwen2.5-vl-3b/7b/32b, qwen3-vl-8b), batch 1, prefix lengths L in 2k/8k/32k/64k keys, tree sizes N
in 1/8/26/48/64, fp16 and bf16 (report set: qwen2.5-vl-7b/3b and llava-ov-72b, 8k/32k/64k,
N 1/8/48, bf16). ``static``: the graph-capturable call (``lengths`` read on the device, K/V in a
static 64k buffer). CPU (Triton interpreter): two tiny smoke shapes.

Regimes (``_common``): every call is timed eagerly; at N = 1 (decode: two short launches, so
the eager time is mostly Python launching them) the plain and the static call are also timed as
replays of a CUDA graph (``..._graph``, CUDA only).

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
from _common import (
    MODELS,
    NO_CUDA_GRAPHS,
    REPORT_MODELS,
    bench_device,
    bench_graph_replays,
    on_gpu,
    pick_shapes,
    record_metrics,
    synchronized,
)

from specvlm_kernels.tree_attention import tree_attention

GPU_MODELS = [
    "llava-ov-0.5b",
    "llava-ov-7b",
    "llava-ov-72b",
    "qwen2.5-vl-3b",
    "qwen2.5-vl-7b",
    "qwen2.5-vl-32b",
    "qwen3-vl-8b",
]
GPU_LENGTHS = [2048, 8192, 32768, 65536]
GPU_NODES = [1, 8, 26, 48, 64]
STATIC_BUFFER = 65536  # the static K/V buffer of the graph-capturable call

GPU_SHAPES = [
    # (name, Hq, Hk, D, L, N, dtype)
    (m, MODELS[m].heads, MODELS[m].kv_heads, MODELS[m].head_dim, length, n, dtype)
    for m in GPU_MODELS
    for length in GPU_LENGTHS
    for n in GPU_NODES
    for dtype in (torch.float16, torch.bfloat16)
]
REPORT_SHAPES = [
    (m, MODELS[m].heads, MODELS[m].kv_heads, MODELS[m].head_dim, length, n, torch.bfloat16)
    for m in REPORT_MODELS
    for length in (8192, 32768, 65536)
    for n in (1, 8, 48)
]
CPU_SHAPES = [  # interpreter smoke shapes
    ("smoke-gqa2", 4, 2, 16, 64, 4, torch.float32),
    ("smoke-decode", 2, 1, 32, 100, 1, torch.float32),
]
SHAPES = pick_shapes(GPU_SHAPES, REPORT_SHAPES, CPU_SHAPES)
GRAPH_SHAPES = [s for s in SHAPES if s[5] == 1]  # decode: launch-bound when eager


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


def _inputs(shape, device, buffer: int | None = None):
    """q, k, v and a tree mask; with ``buffer``, K/V are static buffers of that many keys."""
    _, hq, hk, d, length, n, dtype = shape
    gen = torch.Generator(device=device).manual_seed(0)  # generate on the device: fast
    b = 1
    kw = dict(generator=gen, device=device, dtype=dtype)
    q = torch.randn(b, hq, n, d, **kw)
    k = torch.randn(b, hk, buffer or length, d, **kw)
    v = torch.randn(b, hk, buffer or length, d, **kw)
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
def test_bench_tree_attention_static(benchmark, shape):
    """The graph-capturable call: ``lengths`` on the device, K/V in a static buffer of
    ``STATIC_BUFFER`` keys (the split count is the buffer's, the work the length's)."""
    device = bench_device()
    buffer = max(STATIC_BUFFER, shape[4]) if device.type == "cuda" else shape[4] + 17
    q, k, v, mask = _inputs(shape, device, buffer)
    lengths = torch.full((1,), shape[4], dtype=torch.int32, device=device)
    benchmark.group = f"tree_attention-{_shape_id(shape)}"
    fn = synchronized(lambda: tree_attention(q, k, v, mask, lengths=lengths), device)
    out = fn()
    benchmark(fn)
    assert out.shape == q.shape
    record_metrics(benchmark, device=device, **_metrics(shape), **_info(shape), impl="static")


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


@pytest.mark.skipif(not on_gpu(), reason=NO_CUDA_GRAPHS)
@pytest.mark.parametrize("impl", ["triton", "static"])
@pytest.mark.parametrize("shape", GRAPH_SHAPES, ids=_shape_id)
def test_bench_tree_attention_graph(benchmark, shape, impl):
    """The plain and the static call at N = 1, captured in a CUDA graph and replayed."""
    device = bench_device()
    if impl == "static":
        q, k, v, mask = _inputs(shape, device, max(STATIC_BUFFER, shape[4]))
        lengths = torch.full((1,), shape[4], dtype=torch.int32, device=device)
        call = lambda: tree_attention(q, k, v, mask, lengths=lengths)
    else:
        q, k, v, mask = _inputs(shape, device)
        call = lambda: tree_attention(q, k, v, mask)
    benchmark.group = f"tree_attention-{_shape_id(shape)}"
    bench_graph_replays(benchmark, call, device, **_metrics(shape), **_info(shape), impl=impl)
