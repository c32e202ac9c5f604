"""Step ``perf_model``: the decoders' measured forwards fed to the performance model
(``perf_model.md``), two ways: as :class:`specvlm.tools.perf_model.Measured` cost sources
(decode speedups of naive SD and SpecVLM from the measured forwards themselves), and as the
effective bandwidth and tensor fractions and per-layer overhead of a
:class:`~specvlm.tools.perf_model.Gpu` fitted to them, with the model's projections for the
published pairs on that fitted GPU beside the datasheet one."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

from specvlm.tools.gpu_report.decoders import CONTEXTS

# Datasheet rates by GPU name (dense 16-bit tensor TFLOP/s, HBM GB/s): the perf model's inputs.
DATASHEET = {"H200": (989.0, 4800.0), "H100": (989.0, 3350.0), "A100": (312.0, 2039.0)}


def datasheet_gpu(name: str):
    from specvlm.tools.perf_model import H100, Gpu

    for key, (tflops, gbs) in DATASHEET.items():
        if key in name:
            return Gpu(name, gbs, tflops)
    return replace(H100, name=f"{name} (H100 datasheet)")


def llm(row: dict):
    from specvlm.tools.perf_model import Llm

    return Llm(
        row["model"],
        float(row["params"]),
        row["layers"],
        row["heads"],
        row["kv_heads"],
        row["head_dim"],
        row["bytes_per_param"],
    )


FIXED_GRID = [0.5 * 1.25**i for i in range(36)]  # us per layer: 0.5 to 1200


def rows_of(rows: list[dict], regime: str) -> list[dict]:
    """The timed rows of one regime (rows without a ``regime`` are eager: older reports);
    rows that record a failure (no ``seconds``) are left out."""
    return [r for r in rows if r.get("regime", "eager") == regime and "seconds" in r]


def _loss(rows: list[dict], gpu, regime: str) -> float:
    from specvlm.tools.perf_model import forward_seconds

    return sum(
        math.log(forward_seconds(llm(r), gpu, r["tokens"], r["context"], regime=regime) / s) ** 2
        for r in rows
        if (s := r["seconds"]) > 0
    )


def fit_gpu(rows: list[dict], base):
    """The perf model's GPU fitted to the measured forwards (least squares on log times, grid
    search): ``bw_fraction``, ``tc_fraction`` and ``eager_us`` to the eager rows, then, with
    those fractions, ``captured_us`` to the captured rows (kept as ``base``'s when there are
    none). Returns the GPU, the loss over all rows and whether captured rows were fitted."""
    eager, captured = rows_of(rows, "eager"), rows_of(rows, "captured")
    best, best_loss = base, _loss(eager, base, "eager")
    for bw in [0.2 + 0.05 * i for i in range(21)]:
        for tc in [0.05 + 0.05 * i for i in range(20)]:
            for fixed in FIXED_GRID:
                gpu = replace(base, bw_fraction=bw, tc_fraction=tc, eager_us=fixed)
                value = _loss(eager, gpu, "eager")
                if value < best_loss:
                    best, best_loss = gpu, value
    if not captured:
        return best, best_loss, False
    fits = [replace(best, captured_us=fixed) for fixed in FIXED_GRID]
    losses = [_loss(captured, gpu, "captured") for gpu in fits]
    i = min(range(len(fits)), key=losses.__getitem__)
    return fits[i], best_loss + losses[i], True


class MeasuredForwards:
    """One model's measured forward times as a :class:`specvlm.tools.perf_model.Measured`
    table: ``seconds(n, context)`` interpolated linearly between the measured node counts and
    contexts (extrapolated along the last segment beyond them). Prefills were not measured."""

    def __init__(self, rows: list[dict]):
        self.grid = {(r["tokens"], r["context"]): r["seconds"] for r in rows}
        self.nodes = sorted({n for n, _ in self.grid})
        self.contexts = sorted({c for _, c in self.grid})

    @staticmethod
    def _segment(points: list[int], x: float) -> tuple[int, int, float]:
        if len(points) == 1:
            return points[0], points[0], 0.0
        i = max(0, min(len(points) - 2, sum(1 for p in points if p <= x) - 1))
        lo, hi = points[i], points[i + 1]
        return lo, hi, (x - lo) / (hi - lo)

    def seconds(self, tokens: int, context: int) -> float:
        n0, n1, tn = self._segment(self.nodes, tokens)
        c0, c1, tc = self._segment(self.contexts, context)

        def at(n, c0_, c1_):
            return self.grid[(n, c0_)] + tc * (self.grid[(n, c1_)] - self.grid[(n, c0_)])

        low, high = at(n0, c0, c1), at(n1, c0, c1)
        return max(low + tn * (high - low), 1e-9)

    def prefill_seconds(self, tokens: int) -> float:
        raise NotImplementedError("prefills were not measured by the GPU report")


def measured_projection(rows: list[dict], tiny: bool, regime: str = "eager") -> str:
    """Decode speedups of naive SD and SpecVLM from the measured forwards: the performance
    model's step and decode costs (:func:`specvlm.tools.perf_model.step_seconds`,
    :func:`~specvlm.tools.perf_model.decode_seconds`) on :class:`~specvlm.tools.perf_model.
    Measured` cost sources, as :func:`~specvlm.tools.perf_model.project` computes them on the
    roofline (default tree of 48 nodes, depth 6; tau 3.9 for both; drop rate 0.9; 200 text
    tokens; 256 new tokens), all forwards of ``regime``."""
    from specvlm.tools.perf_model import Measured, decode_seconds, step_seconds
    from specvlm.trees import tree_of_size

    by_model: dict[str, list[dict]] = {}
    for r in rows_of(rows, regime):
        by_model.setdefault(r["model"], []).append(r)
    pairs = (
        [("tiny-target", "tiny-draft")]
        if tiny
        else [("qwen2.5-vl-7b", "qwen2.5-vl-3b"), ("llava-ov-7b", "llava-ov-0.5b")]
    )
    text, new, tau, drop = (16, 32, 3.9, 0.9) if tiny else (200, 256, 3.9, 0.9)
    tree = tree_of_size(48, 6)
    lines = [
        "| target / draft | video tokens | target forward ms (1 token) | SpecVLM step ms "
        "| naive SD step ms | decode speedup naive / SpecVLM |",
        "|---|---|---|---|---|---|",
    ]
    for t_name, d_name in pairs:
        if t_name not in by_model or d_name not in by_model:
            continue
        target = Measured(MeasuredForwards(by_model[t_name]))
        draft = Measured(MeasuredForwards(by_model[d_name]))
        for video in CONTEXTS["tiny" if tiny else "gpu"]:
            prompt, kept = text + video, text + int(video * (1 - drop))
            mid, decode = new // 2, new - 1
            ar = decode_seconds(target, decode, prompt)
            sd_step = step_seconds(target, draft, tree, prompt + mid, kept + mid)
            naive_step = step_seconds(target, draft, tree, prompt + mid, prompt + mid)
            sd, naive = decode / tau * sd_step, decode / tau * naive_step
            lines.append(
                f"| {t_name} / {d_name} | {video} | {target.forward(1, prompt) * 1e3:.2f} "
                f"| {sd_step * 1e3:.2f} | {naive_step * 1e3:.2f} "
                f"| {ar / naive:.2f}x / {ar / sd:.2f}x |"
            )
    return "\n".join(lines)


def _forwards_table(rows: list[dict], base, fitted) -> list[str]:
    from specvlm.tools.perf_model import forward_seconds

    lines = [
        "| model | role | regime | context | tokens | measured ms | datasheet model ms "
        "| fitted model ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        regime = r.get("regime", "eager")
        if "seconds" not in r:
            lines.append(f"| {r['model']} | {r['role']} | {regime} | failed: {r['error']} |")
            continue
        model, t, c = llm(r), r["tokens"], r["context"]
        ds = forward_seconds(model, base, t, c, regime=regime) * 1e3
        fit = forward_seconds(model, fitted, t, c, regime=regime) * 1e3
        lines.append(
            f"| {r['model']} | {r['role']} | {regime} | {c} | {t} "
            f"| {r['seconds'] * 1e3:.2f} | {ds:.2f} | {fit:.2f} |"
        )
    return lines


def fit_lines(base, fitted, loss: float, count: int, captured: bool) -> list[str]:
    """What was fitted, and the captured cost's source when no captured forward was timed."""
    captured_note = (
        f"captured_us {fitted.captured_us:.1f}"
        if captured
        else f"captured_us not measured (no captured rows: {fitted.captured_us:.1f}, assumed)"
    )
    return [
        f"Datasheet GPU: {base.name}: {base.hbm_gbs:.0f} GB/s, {base.tc_tflops:.0f} TFLOP/s, "
        f"bw_fraction {base.bw_fraction}, tc_fraction {base.tc_fraction}, "
        f"eager_us {base.eager_us} (assumed), captured_us {base.captured_us} (assumed).",
        f"Fitted to the measured forwards: bw_fraction {fitted.bw_fraction:.2f}, tc_fraction "
        f"{fitted.tc_fraction:.2f}, eager_us {fitted.eager_us:.1f}, {captured_note} (rms log "
        f"error {math.sqrt(loss / max(count, 1)):.2f}).",
    ]


def page(rows: list[dict], base, fitted, loss: float, tiny: bool, captured: bool) -> str:
    from specvlm.tools.perf_model import DEFAULT_MIX, regime_table, table

    timed = len(rows_of(rows, "eager")) + len(rows_of(rows, "captured"))
    lines = [
        *fit_lines(base, fitted, loss, timed, captured),
        "",
        *_forwards_table(rows, base, fitted),
    ]
    for regime in ("eager", "captured") if captured else ("eager",):
        lines += [
            "",
            f"Decode speedups on the measured {regime} forwards themselves (the model's step and "
            "decode costs on `Measured` cost sources; tau 3.9, drop rate 0.9, the default "
            "48-node tree):",
            "",
            measured_projection(rows, tiny, regime),
        ]
    lines += ["", f"Default regime: {DEFAULT_MIX[0]} ({DEFAULT_MIX[3]}).", ""]
    for name, gpu in (("datasheet", base), ("fitted", fitted)):
        lines += [f"Projections with the {name} GPU, every regime mix:", "", regime_table(gpu)]
        lines += ["", f"Projections with the {name} GPU, {DEFAULT_MIX[0]}:", "", table(gpu), ""]
    return "\n".join(lines)


def run(out: Path, tiny: bool) -> tuple[str, list[str]]:
    rows = json.loads((out / "decoders.json").read_text())
    if not rows_of(rows, "eager"):
        raise RuntimeError("no eager decoder timings to fit (decoders.json has none)")
    env = json.loads((out / "env.json").read_text()) if (out / "env.json").exists() else {}
    gpu_name = env.get("gpu", "H100") if env.get("cuda") and not tiny else "H100"
    base = datasheet_gpu(gpu_name)
    fitted, loss, captured = fit_gpu(rows, base)
    (out / "perf_model.md").write_text(page(rows, base, fitted, loss, tiny, captured) + "\n")
    fit = {"datasheet": asdict(base), "fitted": asdict(fitted), "loss": loss}
    fit["captured_measured"] = captured  # read by specvlm.tools.fixed_costs.report_costs
    (out / "perf_model.json").write_text(json.dumps(fit, indent=2))
    detail = (
        f"fitted bw {fitted.bw_fraction:.2f}, tc {fitted.tc_fraction:.2f}, "
        f"eager {fitted.eager_us:.1f} us, captured "
        + (f"{fitted.captured_us:.1f} us" if captured else "not measured")
    )
    return detail, ["perf_model.md", "perf_model.json"]
