"""The fixed cost of a decode forward per layer, in two regimes, and where each number comes from.

A forward of a few tokens does little arithmetic: on a GPU its time is the weights' read plus a
fixed cost per layer, the host's work of issuing the layer's kernels. That cost depends on how
the forward runs:

* **eager**: transformers' code as written, every op of a layer (norms, projections, rotary
  embedding, cache update, attention, MLP: a few dozen) issued from Python through the
  dispatcher, one kernel launch each; at decode sizes the GPU waits for the host.
* **captured**: a static KV cache and the forward captured once (``torch.compile``; on CUDA
  ``mode="reduce-overhead"``, i.e. a CUDA graph replayed), so the host issues one replay and the
  device runs the kernels back to back.

The GPU numbers below are **assumptions** until a GPU report (``python -m
specvlm.tools.gpu_report``: ``perf_model.json``, fitted to real-config decoders timed in both
regimes) replaces them (:func:`report_costs`); the CPU numbers are **measured**
(``bench/fixed_cost.py``, ``docs/bench/fixed_costs.json``: the embedded micro pair, eager against
static cache + ``torch.compile``, per layer = a one-token decode forward / layers).
"""

from __future__ import annotations

import json
from pathlib import Path

EAGER, CAPTURED = "eager", "captured"
REGIMES = (EAGER, CAPTURED)

# Assumed on a GPU (H100), per layer and forward.
CAPTURED_US = 8.0
CAPTURED_SOURCE = (
    "assumed: a CUDA-graph replay of a compiled layer, about 5 fused launches 1.5 us apart "
    "(bench/roofline.py's gap between dependent launches) plus its small ops"
)
EAGER_US = 300.0
EAGER_SOURCE = (
    "assumed: transformers' eager decode is host-bound on an H100; published decode steps put "
    "the eager overhead between ~100 us per layer (Llama-3.1-8B on an H100, 8.4 ms eager vs "
    "5.1 ms as a CUDA graph) and ~900 us (gpt-fast, Llama-2-7B on an A100, 25.5 vs 107 "
    "tokens/s with torch.compile); 300 us assumes a few dozen ops per layer at ~7-10 us of "
    "Python and dispatch each"
)
RECORD = Path(__file__).resolve().parents[2] / "docs" / "bench" / "fixed_costs.json"


def check_regime(regime: str) -> None:
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")


def cpu_record(path: Path = RECORD) -> dict | None:
    """The CPU measurement (``bench/fixed_cost.py``), or None where it is not at hand (an
    installed package without the repository's docs)."""
    return json.loads(path.read_text()) if path.exists() else None


def per_layer_us(record: dict) -> dict[tuple[str, str], float]:
    """``{(model, regime): us}``: one decode forward's time over the model's layers."""
    out = {}
    for row in record["models"]:
        for regime in REGIMES:
            out[(row["model"], regime)] = row[f"{regime}_s"] / row["layers"] * 1e6
    return out


def report_costs(path: Path) -> dict[str, float]:
    """The fixed costs a GPU report fitted (``perf_model.json``): ``{regime: us}`` for each
    regime it measured (a report whose captured forwards failed or were cut short has only
    ``eager``)."""
    fit = json.loads(Path(path).read_text())
    fitted = fit["fitted"]
    out = {EAGER: float(fitted["eager_us"])}
    if fit.get("captured_measured"):
        out[CAPTURED] = float(fitted["captured_us"])
    return out


def describe(gpu, sources: dict[str, str] | None = None, record: dict | None = None) -> list[str]:
    """Lines saying which fixed costs a projection used and where each comes from (``sources``:
    ``{regime: source}``, default: the assumptions above), with this repository's CPU
    measurement beside them when ``record`` is given."""
    sources = {EAGER: EAGER_SOURCE, CAPTURED: CAPTURED_SOURCE, **(sources or {})}
    lines = [
        f"* fixed cost per layer and forward, eager: {gpu.eager_us:.1f} us ({sources[EAGER]})",
        f"* fixed cost per layer and forward, captured: {gpu.captured_us:.1f} us "
        f"({sources[CAPTURED]})",
    ]
    if record is not None:
        costs = per_layer_us(record)
        measured = ", ".join(
            f"{model} {costs[(model, EAGER)]:.0f} us eager / {costs[(model, CAPTURED)]:.0f} us "
            "captured"
            for model in dict.fromkeys(m for m, _ in costs)
        )
        lines.append(f"* measured on {record['hardware']} (the micro pair, per layer): {measured}")
    return lines
