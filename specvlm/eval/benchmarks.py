"""The benchmarks ``specvlm eval`` runs: where each comes from, its protocol, and the numbers
published for it (no torch).

The protocol is the reference SpecVLM evaluation's where it is known (VideoDetailCaption: the
first 100 samples after ``shuffle(seed=42)``, 256 new tokens, drop rate 0.9; MVBench: the
action_sequence and action_prediction subsets), and otherwise the same settings: every sample,
256 new tokens, drop rate 0.9, 32 frames (the paper used 64 for the 72B target: ``--frames
64``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from specvlm.eval import datasets
from specvlm.eval.samples import Sample


@dataclass(frozen=True)
class Protocol:
    samples: int | None = None  # None: every sample
    shuffle: bool = False  # select after a seeded shuffle (HF datasets' shuffle(seed))
    frames: int = 32
    max_new_tokens: int = 256
    drop_rate: float = 0.9


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    source: str  # where the files come from, in one line
    # (data dir, answer style, frames, samples wanted or None) -> samples
    read: Callable[[str | None, str, int, int | None], list[Sample]]
    protocol: Protocol = field(default_factory=Protocol)
    files: tuple[str, ...] = ()  # what --data must hold (for the docs and the errors)
    published: dict = field(default_factory=dict)


_LLAVA_72B = "LLaVA-OneVision-72B / 7B draft, A100s, decode only"

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "micro",
            "the embedded pair's held-out clips",
            "generated from the embedded pair's held-out clips (no download)",
            datasets.read_micro,
            Protocol(samples=24, frames=32, max_new_tokens=32),
        ),
        Benchmark(
            "videodetailcaption",
            "VideoDetailCaption",
            "huggingface.co/datasets/lmms-lab/VideoDetailCaption (test parquet and Test_Videos)",
            datasets.read_videodetailcaption,
            Protocol(samples=100, shuffle=True),
            datasets.VIDEODETAILCAPTION_FILES,
            {"setting": _LLAVA_72B, "tau": 4.15, "samples": 100},
        ),
        Benchmark(
            "mvbench",
            "MVBench (action_sequence, action_prediction)",
            "huggingface.co/datasets/OpenGVLab/MVBench (json/ and video/star/)",
            datasets.read_mvbench,
            Protocol(),
            datasets.MVBENCH_FILES,
            {"setting": _LLAVA_72B, "tau": 3.80},
        ),
        Benchmark(
            "longvideobench",
            "LongVideoBench (validation)",
            "huggingface.co/datasets/longvideobench/LongVideoBench (lvb_val.json and videos/)",
            datasets.read_longvideobench,
            Protocol(),
            datasets.LONGVIDEOBENCH_FILES,
            {"setting": _LLAVA_72B, "tau": 3.82, "video_tokens": "~15k"},
        ),
        Benchmark(
            "mlvu",
            "MLVU (dev, multiple choice)",
            "huggingface.co/datasets/MLVU/MVLU (MLVU/json/ and MLVU/video/)",
            datasets.read_mlvu,
            Protocol(),
            datasets.MLVU_FILES,
            {"setting": _LLAVA_72B, "tau": 4.0},
        ),
        Benchmark(
            "videomme",
            "Video-MME",
            "huggingface.co/datasets/lmms-lab/Video-MME (videomme/*.parquet and data/)",
            datasets.read_videomme,
            Protocol(),
            datasets.VIDEOMME_FILES,
            {"setting": "wall time", "e2e_speedup": 2.24},
        ),
        Benchmark(
            "lvbench",
            "LVBench",
            "huggingface.co/datasets/THUDM/LVBench (video_info.meta.jsonl) and "
            "AIWinter/LVBench (the videos, into videos/)",
            datasets.read_lvbench,
            Protocol(),
            datasets.LVBENCH_FILES,
            {"setting": _LLAVA_72B, "tau": 4.2},
        ),
    )
}


def select(samples: list[Sample], protocol: Protocol, limit: int | None, seed: int) -> list:
    """The samples a run takes: all, or the first ``limit`` (default: the protocol's count),
    after the protocol's seeded shuffle (the permutation HF datasets' ``shuffle(seed)`` makes:
    numpy's ``default_rng(seed).permutation``)."""
    if protocol.shuffle:
        import numpy as np

        order = np.random.default_rng(seed).permutation(len(samples))
        samples = [samples[int(i)] for i in order]
    count = limit if limit is not None else protocol.samples
    return samples if count is None else samples[:count]


def benchmark_samples(
    name: str, data: str | None, style: str, frames: int | None = None, limit=None, seed=42
) -> list[Sample]:
    """The samples of a run (``frames``, ``limit``: the protocol's when None), every file
    checked (:class:`~specvlm.tools.common.ToolError` in one line for a missing or malformed
    dataset, or a missing video)."""
    bench = BENCHMARKS[name]
    protocol = bench.protocol
    count = limit if limit is not None else protocol.samples
    read = bench.read(data, style, frames or protocol.frames, None if protocol.shuffle else count)
    chosen = select(read, protocol, limit, seed)
    datasets.check_videos(chosen, name)
    return chosen
