"""Benchmark: per-layer video attention scores (Triton, two passes) vs the eager path.

Compared implementations, per layer:
* ``triton``: :func:`specvlm_kernels.video_attention_scores`.
* ``eager``: what ``output_attentions=True`` costs: the ``[B, Hq, Lq, Lk]`` fp32 probability
  matrix from matmul + mask + softmax, then the mean over heads and rows of the video columns.
* ``prefill``: the layer's own causal SDPA (flash) prefill over all ``Lk`` tokens, for the
  "scoring is under 5% of the layer's prefill" goal.

CUDA: layer shapes of llava-ov-7b/72b, qwen2.5-vl-3b/7b/32b and qwen3-vl-8b; 32 system tokens,
then ``Nv`` video tokens (2k, 16k, 64k), then ``Lq`` text rows (64, 256); fp16 and bf16
(report set: qwen2.5-vl-7b/3b and llava-ov-72b, 16k and 64k, bf16). CPU (interpreter): two tiny
smoke shapes.

    PYTHONPATH=. python -m pytest bench/test_bench_attention_scores.py --benchmark-json=s.json

Metrics (``record_metrics``): flops = executed QK^T work of both passes,
``2 * B * Hq * Lq * (Lk + Nv) * D`` (the eager path counts ``2 * B * Hq * Lq * Lk * D``); bytes =
K read once per pass (``B * Hk * (Lk + Nv) * D * elt``) + q + the fp32 output. On CUDA,
``extra_mem_mb`` is the peak memory the call allocates beyond its inputs.
"""

from __future__ import annotations

import pytest
import torch
from _common import MODELS, REPORT_MODELS, bench_device, pick_shapes, record_metrics, synchronized

from specvlm_kernels.attention_scores import video_attention_scores

PREFIX = 32

GPU_SHAPES = [
    # (name, Hq, Hk, D, Nv, Lq, dtype)
    (m, MODELS[m].heads, MODELS[m].kv_heads, MODELS[m].head_dim, nv, lq, dtype)
    for m in (
        "llava-ov-7b",
        "llava-ov-72b",
        "qwen2.5-vl-3b",
        "qwen2.5-vl-7b",
        "qwen2.5-vl-32b",
        "qwen3-vl-8b",
    )
    for nv in (2048, 16384, 65536)
    for lq in (64, 256)
    for dtype in (torch.float16, torch.bfloat16)
]
REPORT_SHAPES = [
    s for s in GPU_SHAPES if s[0] in REPORT_MODELS and s[4] >= 16384 and s[6] == torch.bfloat16
]
CPU_SHAPES = [  # interpreter smoke shapes
    ("smoke-gqa2", 4, 2, 16, 48, 5, torch.float32),
    ("smoke-gqa7", 7, 1, 32, 40, 3, torch.float32),
]
SHAPES = pick_shapes(GPU_SHAPES, REPORT_SHAPES, CPU_SHAPES)


def _shape_id(shape) -> str:
    name, _, _, _, nv, lq, dtype = shape
    return f"{name}-Nv{nv}-Lq{lq}-{str(dtype).replace('torch.', '')}"


def _inputs(shape, device):
    _, hq, hk, d, nv, lq, dtype = shape
    lk = PREFIX + nv + lq
    gen = torch.Generator(device=device).manual_seed(0)
    kw = dict(generator=gen, device=device, dtype=dtype)
    return torch.randn(1, hq, lq, d, **kw), torch.randn(1, hk, lk, d, **kw)


def _info(shape, impl):
    name, hq, hk, d, nv, lq, dtype = shape
    return dict(
        model=name,
        B=1,
        Hq=hq,
        Hk=hk,
        D=d,
        Nv=nv,
        Lq=lq,
        Lk=PREFIX + nv + lq,
        dtype=str(dtype).replace("torch.", ""),
        impl=impl,
    )


def _metrics(shape, impl):
    _, hq, hk, d, nv, lq, dtype = shape
    lk = PREFIX + nv + lq
    elt = torch.empty((), dtype=dtype).element_size()
    if impl == "triton":
        flops = 2 * hq * lq * (lk + nv) * d
        bytes_moved = hk * (lk + nv) * d * elt + hq * lq * d * elt + 4 * nv
    elif impl == "eager":
        flops = 2 * hq * lq * lk * d
        bytes_moved = hk * lk * d * elt + hq * lq * d * elt + 3 * 4 * hq * lq * lk  # scores r/w
    else:  # prefill: causal QK^T and PV over all lk rows
        flops = 2 * hq * lk * lk * d
        bytes_moved = 4 * hk * lk * d * elt + 2 * hq * lk * d * elt
    return dict(flops=float(flops), bytes_moved=float(bytes_moved))


def _eager_scores(q, k):
    """The output_attentions-style path: full fp32 probabilities, then the video mean."""
    hq, lq = q.shape[1], q.shape[2]
    hk, lk = k.shape[1], k.shape[2]
    kk = k.repeat_interleave(hq // hk, dim=1)
    s = torch.matmul(q, kk.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    rows = torch.arange(lq, device=q.device)[:, None] + (lk - lq)
    s.masked_fill_(torch.arange(lk, device=q.device)[None, :] > rows, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return p[..., PREFIX : lk - lq].mean(dim=(1, 2))


def _peak_extra_mb(fn, device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _run(benchmark, shape, impl, fn):
    device = bench_device()
    benchmark.group = f"video_attention_scores-{_shape_id(shape)}"
    fn = synchronized(fn, device)
    fn()  # compile / warm up outside the timed region
    extra_mb = _peak_extra_mb(fn, device)
    benchmark(fn)
    info = _info(shape, impl)
    if extra_mb is not None:
        info["extra_mem_mb"] = extra_mb
    record_metrics(benchmark, device=device, **_metrics(shape, impl), **info)


@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_bench_scores_triton(benchmark, shape):
    q, k = _inputs(shape, bench_device())
    nv = shape[4]
    _run(benchmark, shape, "triton", lambda: video_attention_scores(q, k, PREFIX, PREFIX + nv))


@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_bench_scores_eager(benchmark, shape):
    q, k = _inputs(shape, bench_device())
    _run(benchmark, shape, "eager", lambda: _eager_scores(q, k))


@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_bench_layer_prefill_sdpa(benchmark, shape):
    """The layer's own flash prefill over the whole prompt (q, k, v of all Lk tokens)."""
    device = bench_device()
    _, hq, hk, d, nv, lq, dtype = shape
    lk = PREFIX + nv + lq
    gen = torch.Generator(device=device).manual_seed(0)
    kw = dict(generator=gen, device=device, dtype=dtype)
    q = torch.randn(1, hq, lk, d, **kw)
    k = torch.randn(1, hq, lk, d, **kw)  # heads pre-expanded: the flash path needs Hq == Hk
    v = torch.randn(1, hq, lk, d, **kw)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    _run(benchmark, shape, "prefill", lambda: sdpa(q, k, v, is_causal=True))
