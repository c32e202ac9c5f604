"""Benchmark: two-stage video-token selection (Triton) vs the eager PyTorch reference.

CUDA: batch 1, Nv in 2k/16k/64k/128k video tokens, keep = 10% of Nv (selection alone also at
drop rates 0.5 / 0.75 / 0.95 for 64k Qwen2.5-VL tokens), mass = 0.4, scores an
fp32 softmax row (attention-like). Token layouts: LLaVA-OneVision frames of 14 x 14 = 196
tokens, Qwen2.5-VL frames of 16 x 28 = 448 tokens (after the 2 x 2 merge), with T the number
of frames closest to Nv (so Nv is T * H * W, e.g. 65464 = 334 * 196), plus a flat layout
(``grid=None``) for the selection alone. ``prune_video_tokens`` also gathers bf16 features of
the draft's hidden size: C = 3584 (llava-ov-7b / qwen2.5-vl-7b) and 896 (llava-ov-0.5b).
CPU (Triton interpreter): two tiny smoke shapes.

    PYTHONPATH=. python -m pytest bench/test_bench_token_select.py --benchmark-json=select.json

The Triton side is the public function (shape and dtype validation on the host, no value check
and no device sync on CUDA, then the selection launches and, for prune, one gather launch),
timed in both regimes of ``_common``: eager calls (``..._triton``) and, on CUDA, replays of the
call captured in a CUDA graph (``..._graph``): with 9-11 short launches the eager time is
mostly Python issuing them.
The eager side is ``select_video_tokens_ref`` / ``prune_video_tokens_ref``: fp64 sort +
cumsum + scatter + index (+ ``gather``), as a PyTorch user would write it.

Metrics (``record_metrics``), the minimal algorithmic counts:
* bytes = scores read once (``B * Nv * 4``) + indices written (``B * keep * 8``) + for prune
  the kept feature rows read and written (``2 * B * keep * C * elt``). The selection kernels'
  repeated passes over the scores (10 of them, L2-resident after the first) are not counted:
  the GB/s figure says how far the op is from a single pass over its inputs.
* flops = 0 (comparisons and sums only).
"""

from __future__ import annotations

import pytest
import torch
from _common import (
    MODELS,
    NO_CUDA_GRAPHS,
    bench_device,
    bench_graph_replays,
    on_gpu,
    pick_shapes,
    record_metrics,
    synchronized,
)

from specvlm_kernels import prune_video_tokens, select_video_tokens
from specvlm_kernels.reference import prune_video_tokens_ref, select_video_tokens_ref

MASS = 0.4
FRAMES = {"llava-ov": (14, 14), "qwen2.5-vl": (16, 28)}


def _layout(name: str, nv: int):
    """(grid, Nv) for a target token count: the frame count closest to nv / (H * W)."""
    if name == "flat":
        return None, nv
    h, w = FRAMES[name]
    t = max(1, round(nv / (h * w)))
    return (t, h, w), t * h * w


SIZES = [2048, 16384, 65536, 131072]
CHANNELS = [MODELS["llava-ov-7b"].hidden, MODELS["llava-ov-0.5b"].hidden]  # 3584, 896
GPU_SELECT_SHAPES = [
    (lay, nv, 0.9) for nv in SIZES for lay in ("llava-ov", "qwen2.5-vl", "flat")
] + [("qwen2.5-vl", 65536, drop) for drop in (0.5, 0.75, 0.95)]  # drop-rate sweep
GPU_PRUNE_SHAPES = [
    (lay, nv, c, torch.bfloat16)
    for nv in SIZES
    for lay in ("llava-ov", "qwen2.5-vl")
    for c in CHANNELS
]
REPORT_SELECT_SHAPES = [s for s in GPU_SELECT_SHAPES if s[1] in (16384, 65536) and s[2] == 0.9]
REPORT_PRUNE_SHAPES = [s for s in GPU_PRUNE_SHAPES if s[1] in (16384, 65536)]
CPU_SELECT_SHAPES = [("llava-ov", 196, 0.9), ("flat", 120, 0.5)]  # interpreter smoke shapes
CPU_PRUNE_SHAPES = [("llava-ov", 196, 32, torch.float32), ("flat", 120, 16, torch.float32)]
SELECT_SHAPES = pick_shapes(GPU_SELECT_SHAPES, REPORT_SELECT_SHAPES, CPU_SELECT_SHAPES)
PRUNE_SHAPES = pick_shapes(GPU_PRUNE_SHAPES, REPORT_PRUNE_SHAPES, CPU_PRUNE_SHAPES)


def _select_id(shape) -> str:
    return f"{shape[0]}-Nv{shape[1]}-drop{shape[2]}"


def _prune_id(shape) -> str:
    lay, nv, c, dtype = shape
    return f"{lay}-Nv{nv}-C{c}-{str(dtype).replace('torch.', '')}"


def _scores(nv: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(1, nv, generator=gen, device=device) * 3.0
    return torch.softmax(logits, dim=-1)  # fp32, attention-like: a few heavy tokens


def _select_case(shape, device):
    lay, target_nv, drop_rate = shape
    grid, nv = _layout(lay, target_nv)
    keep = int(nv * (1.0 - drop_rate))
    scores = _scores(nv, device)
    # scores read once + indices written (see the module docstring)
    bytes_moved = scores.numel() * 4 + keep * 8
    info = dict(layout=lay, B=1, Nv=nv, keep=keep, drop_rate=drop_rate, grid=str(grid), mass=MASS)
    return scores, keep, grid, float(bytes_moved), info


def _prune_case(shape, device):
    lay, target_nv, c, dtype = shape
    grid, nv = _layout(lay, target_nv)
    keep = nv // 10
    scores = _scores(nv, device)
    gen = torch.Generator(device=device).manual_seed(1)
    feats = torch.randn(1, nv, c, generator=gen, device=device).to(dtype)
    elt = feats.element_size()
    # scores read once + indices written + kept rows read and written
    bytes_moved = scores.numel() * 4 + keep * 8 + 2 * keep * c * elt
    info = dict(
        layout=lay,
        B=1,
        Nv=nv,
        keep=keep,
        C=c,
        grid=str(grid),
        mass=MASS,
        dtype=str(dtype).replace("torch.", ""),
    )
    return feats, scores, keep, grid, float(bytes_moved), info


@pytest.mark.parametrize("shape", SELECT_SHAPES, ids=_select_id)
def test_bench_select_triton(benchmark, shape):
    device = bench_device()
    scores, keep, grid, bytes_moved, info = _select_case(shape, device)
    benchmark.group = f"select-{_select_id(shape)}"
    fn = synchronized(lambda: select_video_tokens(scores, keep, mass=MASS, grid=grid), device)
    out = fn()  # compile outside the timed region
    benchmark(fn)
    assert out.shape == (1, keep)
    record_metrics(
        benchmark, device=device, flops=0.0, bytes_moved=bytes_moved, **info, impl="triton"
    )


@pytest.mark.skipif(not on_gpu(), reason=NO_CUDA_GRAPHS)
@pytest.mark.parametrize("shape", SELECT_SHAPES, ids=_select_id)
def test_bench_select_graph(benchmark, shape):
    device = bench_device()
    scores, keep, grid, bytes_moved, info = _select_case(shape, device)
    benchmark.group = f"select-{_select_id(shape)}"
    call = lambda: select_video_tokens(scores, keep, mass=MASS, grid=grid)
    metrics = dict(flops=0.0, bytes_moved=bytes_moved, impl="triton", **info)
    bench_graph_replays(benchmark, call, device, **metrics)


@pytest.mark.parametrize("shape", SELECT_SHAPES, ids=_select_id)
def test_bench_select_eager(benchmark, shape):
    device = bench_device()
    scores, keep, grid, bytes_moved, info = _select_case(shape, device)
    benchmark.group = f"select-{_select_id(shape)}"
    fn = synchronized(lambda: select_video_tokens_ref(scores, keep, mass=MASS, grid=grid), device)
    out = fn()
    benchmark(fn)
    assert out.shape == (1, keep)
    record_metrics(
        benchmark, device=device, flops=0.0, bytes_moved=bytes_moved, **info, impl="eager"
    )


@pytest.mark.parametrize("shape", PRUNE_SHAPES, ids=_prune_id)
def test_bench_prune_triton(benchmark, shape):
    device = bench_device()
    feats, scores, keep, grid, bytes_moved, info = _prune_case(shape, device)
    benchmark.group = f"prune-{_prune_id(shape)}"
    fn = synchronized(lambda: prune_video_tokens(feats, scores, keep, mass=MASS, grid=grid), device)
    kept, _ = fn()
    benchmark(fn)
    assert kept.shape == (1, keep, feats.shape[-1])
    record_metrics(
        benchmark, device=device, flops=0.0, bytes_moved=bytes_moved, **info, impl="triton"
    )


@pytest.mark.skipif(not on_gpu(), reason=NO_CUDA_GRAPHS)
@pytest.mark.parametrize("shape", PRUNE_SHAPES, ids=_prune_id)
def test_bench_prune_graph(benchmark, shape):
    device = bench_device()
    feats, scores, keep, grid, bytes_moved, info = _prune_case(shape, device)
    benchmark.group = f"prune-{_prune_id(shape)}"
    call = lambda: prune_video_tokens(feats, scores, keep, mass=MASS, grid=grid)
    metrics = dict(flops=0.0, bytes_moved=bytes_moved, impl="triton", **info)
    bench_graph_replays(benchmark, call, device, **metrics)


@pytest.mark.parametrize("shape", PRUNE_SHAPES, ids=_prune_id)
def test_bench_prune_eager(benchmark, shape):
    device = bench_device()
    feats, scores, keep, grid, bytes_moved, info = _prune_case(shape, device)
    benchmark.group = f"prune-{_prune_id(shape)}"
    fn = synchronized(
        lambda: prune_video_tokens_ref(feats, scores, keep, mass=MASS, grid=grid), device
    )
    kept, _ = fn()
    benchmark(fn)
    assert kept.shape == (1, keep, feats.shape[-1])
    record_metrics(
        benchmark, device=device, flops=0.0, bytes_moved=bytes_moved, **info, impl="eager"
    )
