"""Helpers shared by the kernel benchmarks: real-model shapes, peak rates, and derived metrics.

Benchmarks run the real-model shapes on CUDA; without CUDA they run tiny smoke shapes (the
Triton interpreter is far too slow for real ones), and the numbers they print are CPU numbers.
Each bench module keeps three shape lists: ``GPU_SHAPES`` (the full sweep), ``REPORT_SHAPES``
(the models of :data:`REPORT_MODELS` at a few sizes: what ``scripts/gpu_report.sh`` times in
its budget) and ``CPU_SHAPES``; ``SPECVLM_BENCH_SHAPES=report`` picks the report set on CUDA.
``bench/compile_check.py`` compiles every launch of the GPU shapes of :data:`REPORT_MODELS`.

Two timing regimes (``extra_info["regime"]``): ``eager``, the public call from Python with a
synchronize after each call (what every bench times), and ``graph``, the same call captured once
in a CUDA graph and replayed :data:`GRAPH_REPLAYS` times back to back before one synchronize
(``median_us`` is per replay). The graph rows exist for the launch-bound ops (selection and
prune: 9-11 launches; tree attention at N = 1), whose eager time is mostly host launches;
``bench/roofline.py`` has an expectation for each regime. Without CUDA there are no graphs: the
graph rows are skipped.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch

from specvlm.tools.static_forward import graph_captured

GRAPH_REPLAYS = 20  # graph replays per timed round, one synchronize at the end
NO_CUDA_GRAPHS = "CUDA graphs need a CUDA device: the graph-replay regime is timed on GPUs only"


@dataclass(frozen=True)
class LayerShape:
    name: str
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int


# Attention-layer shapes of the language models inside the target/draft video LLMs.
MODELS = {
    "llava-ov-0.5b": LayerShape("llava-ov-0.5b", 14, 2, 64, 896),
    "llava-ov-7b": LayerShape("llava-ov-7b", 28, 4, 128, 3584),
    "llava-ov-72b": LayerShape("llava-ov-72b", 64, 8, 128, 8192),
    "qwen2.5-vl-3b": LayerShape("qwen2.5-vl-3b", 16, 2, 128, 2048),
    "qwen2.5-vl-7b": LayerShape("qwen2.5-vl-7b", 28, 4, 128, 3584),
    "qwen2.5-vl-32b": LayerShape("qwen2.5-vl-32b", 40, 8, 128, 5120),
    "qwen3-vl-8b": LayerShape("qwen3-vl-8b", 32, 8, 128, 4096),
}

# Dense peak rates from the vendor datasheets (SXM parts): HBM GB/s and 16-bit tensor TFLOP/s.
# Datasheet rates are upper bounds; docs/kernels.md says which measured ceilings we compare to.
PEAKS = {
    "H100": {"hbm_gbs": 3350.0, "tc16_tflops": 989.0},
    "H200": {"hbm_gbs": 4800.0, "tc16_tflops": 989.0},
    "A100": {"hbm_gbs": 2039.0, "tc16_tflops": 312.0},
}


# The models the compile-time check and the GPU report cover: 28/4, 16/2 and 64/8 heads, D 128.
REPORT_MODELS = ("qwen2.5-vl-7b", "qwen2.5-vl-3b", "llava-ov-72b")


def on_gpu() -> bool:
    return torch.cuda.is_available()


def pick_shapes(gpu_shapes: list, report_shapes: list, cpu_shapes: list) -> list:
    """The shapes a bench module runs: the full GPU sweep, or with
    ``SPECVLM_BENCH_SHAPES=report`` the report subset; the smoke shapes without CUDA."""
    if not on_gpu():
        return cpu_shapes
    if os.environ.get("SPECVLM_BENCH_SHAPES", "full").strip().lower() == "report":
        return report_shapes
    return gpu_shapes


def bench_device() -> torch.device:
    return torch.device("cuda" if on_gpu() else "cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def peaks_for(device: torch.device) -> dict | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAKS.items():
        if key in name:
            return peaks
    return None


def synchronized(fn, device: torch.device):
    """Wrap ``fn`` so a wall-clock timer around it measures finished device work."""
    if device.type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


def graph_replayer(fn, device: torch.device, replays: int = GRAPH_REPLAYS):
    """``fn`` (launches only: no host sync) captured once in a CUDA graph, after two warm-up
    calls on a side stream (compilation, cached launch state:
    :func:`specvlm.tools.static_forward.graph_captured`); returns a callable that replays the
    graph ``replays`` times back to back and synchronizes: its time over ``replays`` is one
    call in the graph-replay regime."""
    replay_once = graph_captured(fn, device)

    def replay():
        for _ in range(replays):
            replay_once()
        torch.cuda.synchronize(device)

    replay.graph = replay_once.graph  # kept alive with the callable
    return replay


def bench_graph_replays(benchmark, call, device: torch.device, **metrics) -> None:
    """Time ``call`` in the graph-replay regime (:func:`graph_replayer`) and record its metrics
    (``flops``, ``bytes_moved`` and the row's info) as one call of that regime."""
    benchmark(graph_replayer(call, device))
    record_metrics(benchmark, device=device, regime="graph", calls=GRAPH_REPLAYS, **metrics)


def median_seconds(benchmark) -> float | None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return None
    return float(stats.stats.median)


def record_metrics(
    benchmark,
    *,
    device,
    flops: float,
    bytes_moved: float,
    regime: str = "eager",
    calls: int = 1,
    **info,
) -> None:
    """Store shapes/versions and the derived rates of the last timed run in ``extra_info``;
    ``calls``: calls per timed round (graph replays), ``median_us`` is per call."""
    import triton

    extra = benchmark.extra_info
    extra.update(info)
    extra.update(
        device=device_name(device),
        torch=torch.__version__,
        triton=triton.__version__,
        flops=flops,
        bytes=bytes_moved,
        regime=regime,
        calls_per_round=calls,
    )
    seconds = median_seconds(benchmark)
    if seconds is None or seconds <= 0:
        return
    seconds /= calls
    extra["median_us"] = seconds * 1e6
    extra["gbs"] = bytes_moved / seconds / 1e9
    extra["tflops"] = flops / seconds / 1e12
    peaks = peaks_for(device)
    if peaks:
        extra["pct_hbm_peak"] = 100.0 * extra["gbs"] / peaks["hbm_gbs"]
        extra["pct_tc_peak"] = 100.0 * extra["tflops"] / peaks["tc16_tflops"]


def write_between_markers(path, begin: str, end: str, body: str) -> None:
    """Replace what stands between the lines ``begin`` and ``end`` of the file ``path`` (a docs
    page's generated table) with ``body``."""
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path}: markers {begin!r} / {end!r} not found")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + begin + "\n" + body + end + tail)
