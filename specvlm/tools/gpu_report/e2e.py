"""Step ``e2e``: the embedded micro pair end to end (the target's ``generate``, naive
speculative decoding, SpecVLM) with :func:`specvlm.tools.comparison.compare` (``e2e.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from specvlm.tools.gpu_report.child import step_device

KEEP = (
    "method",
    "new_tokens",
    "mean_accepted_length",
    "decode_s",
    "e2e_s",
    "ttft_s",
    "decode_speedup",
    "e2e_speedup",
    "identical",
    "video_tokens",
    "kept_video_tokens",
    "peak_memory_bytes",
    "error",
)


def _records(workload, frames: int, new_tokens: int, repeats: int) -> list[dict]:
    import torch

    from specvlm.tools.comparison import compare

    with torch.no_grad():
        warm = workload.inputs(frames, 0)
        compare(
            workload.target, workload.draft, warm, ("autoregressive", "specvlm"), max_new_tokens=4
        )
        return compare(
            workload.target,
            workload.draft,
            workload.inputs(frames, 1),
            ("autoregressive", "naive_sd", "specvlm"),
            max_new_tokens=new_tokens,
            repeats=repeats,
            frames=frames,
        )


def run(out: Path, tiny: bool) -> tuple[str, list[str]]:
    import torch

    from specvlm.tools.bench import CheckpointWorkload
    from specvlm.tools.common import EMBEDDED

    device = step_device(tiny)
    if device.type == "cpu":
        torch.set_num_threads(1)
    workload = CheckpointWorkload(
        str(EMBEDDED / "target"), str(EMBEDDED / "draft"), device, "Describe the video."
    )
    frames, new_tokens, repeats = (4, 8, 1) if tiny else (8, 48, 3)
    records = _records(workload, frames, new_tokens, repeats)
    dtype = str(next(workload.target.parameters()).dtype).replace("torch.", "")
    rows = [{k: r.get(k) for k in KEEP} for r in records]
    data = {"frames": frames, "dtype": dtype, "records": rows}
    (out / "e2e.json").write_text(json.dumps(data, indent=2, default=str))
    bad = [r["method"] for r in rows if r.get("error") or r.get("identical") is False]
    if bad:
        raise RuntimeError(f"methods failed or differ from the target's output: {bad}")
    spec = next(r for r in rows if r["method"] == "specvlm")
    detail = (
        f"SpecVLM decode speedup {spec['decode_speedup']:.2f}x, tau {spec['mean_accepted_length']}"
    )
    return detail, ["e2e.json"]
