"""One command for a first GPU run: tests, kernel benches, the embedded pair, decoder costs.

    bash scripts/gpu_report.sh [--out DIR]      # a CUDA machine, no network, under 8 minutes
    bash scripts/gpu_report.sh --tiny           # the same steps on the CPU, small shapes (CI)

(``python -m specvlm.tools.gpu_report`` with ``PYTHONPATH`` at the repository root is the same.)
Every step writes into one results folder and the page ``REPORT.md`` collects them, with the
GPU, its driver and the Python, torch, Triton and transformers versions at the top:

1. ``gpu_tests``: ``pytest tests/kernels -m gpu`` (compiled kernels, real-model shapes, CUDA
   graphs); on the CPU they are collected and skipped.
2. ``benches``: the kernel benches at the report shapes (``SPECVLM_BENCH_SHAPES=report``:
   Qwen2.5-VL-7B/3B and LLaVA-OV-72B layer shapes) with GB/s, TFLOP/s and % of peak
   (``bench/report.py``), beside the analytic H100 expectation of each case
   (``bench/roofline.py``); on the CPU the smoke shapes under the Triton interpreter.
3. ``e2e``: the embedded micro pair end to end (the target's ``generate``, naive speculative
   decoding, SpecVLM) with :func:`specvlm.tools.comparison.compare`.
4. ``decoders``: per-forward times of random-weight text decoders built from the real configs
   of Qwen2.5-VL-7B / -3B and LLaVA-OV-7B / -0.5B (written out below: no network), through
   the library's own decoder call and cache: verification of 1 / 8 / 48 nodes and draft steps
   at 4k / 16k / 64k tokens of context (tiny configs and contexts with ``--tiny``).
5. ``perf_model``: those times fed to the performance model in place of datasheet numbers, two
   ways: as :class:`specvlm.tools.perf_model.Measured` cost sources (decode speedups of naive SD
   and SpecVLM for the 7B/3B and 7B/0.5B pairs from the measured forwards themselves), and as
   the effective bandwidth and tensor fractions and per-layer overhead of a
   :class:`~specvlm.tools.perf_model.Gpu` fitted to them, with the model's projections for the
   published pairs on that fitted GPU beside the datasheet one.

A step that fails or runs out of its time is recorded as such and the others still run; the
exit status is 1 if any step failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Budgets in seconds (GPU run, then --tiny): whole run and per step.
BUDGET = {"gpu": 460, "tiny": 170}
STEP_CAP = {
    "gpu": {"gpu_tests": 150, "benches": 190, "e2e": 70, "decoders": 70},
    "tiny": {"gpu_tests": 60, "benches": 60, "e2e": 50, "decoders": 30},
}

# Text-decoder configurations of the real models (from their Hugging Face config.json files):
# (hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings).
DECODERS = {
    "qwen2.5-vl-7b": (3584, 18944, 28, 28, 4, 152064, False),
    "qwen2.5-vl-3b": (2048, 11008, 36, 16, 2, 151936, True),
    "llava-ov-7b": (3584, 18944, 28, 28, 4, 152064, False),
    "llava-ov-0.5b": (896, 4864, 24, 14, 2, 151936, True),
}
TINY_DECODERS = {
    "tiny-target": (128, 256, 2, 4, 2, 512, False),
    "tiny-draft": (64, 128, 2, 4, 1, 512, True),
}
ROLES = {  # which forwards each model does in SpecVLM: verification (target) or drafting
    "qwen2.5-vl-7b": "target",
    "llava-ov-7b": "target",
    "qwen2.5-vl-3b": "draft",
    "llava-ov-0.5b": "draft",
    "tiny-target": "target",
    "tiny-draft": "draft",
}
CONTEXTS = {"gpu": (4096, 16384, 65536), "tiny": (64, 128, 256)}
NODES = (1, 8, 48)
# Datasheet rates by GPU name (dense 16-bit tensor TFLOP/s, HBM GB/s): the perf model's inputs.
DATASHEET = {"H200": (989.0, 4800.0), "H100": (989.0, 3350.0), "A100": (312.0, 2039.0)}


@dataclass
class Step:
    name: str
    ok: bool = False
    seconds: float = 0.0
    detail: str = ""
    files: list[str] = field(default_factory=list)


class Report:
    def __init__(self, out: Path, mode: str):
        self.out, self.mode = out, mode
        self.start = time.monotonic()
        self.deadline = self.start + BUDGET[mode]
        self.steps: list[Step] = []
        self.data: dict = {}

    def timeout(self, name: str) -> float:
        return max(5.0, min(STEP_CAP[self.mode][name], self.deadline - time.monotonic()))

    def run(self, name: str, fn) -> Step:
        step = Step(name)
        began = time.monotonic()
        try:
            step.detail = fn(step) or ""
            step.ok = True
        except Exception as err:  # noqa: BLE001 (recorded, and the report goes on)
            step.detail = f"{type(err).__name__}: {err}"
            (self.out / f"{name}_error.txt").write_text(traceback.format_exc())
            step.files.append(f"{name}_error.txt")
        step.seconds = time.monotonic() - began
        self.steps.append(step)
        print(f"[gpu_report] {name}: {'ok' if step.ok else 'FAILED'} ({step.seconds:.0f} s)")
        return step


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------
def environment(cuda: bool) -> dict:
    import torch
    import transformers
    import triton

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "transformers": transformers.__version__,
        "cuda_runtime": torch.version.cuda,
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=torch.cuda.get_device_name(0),
            sms=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            driver=_driver_version(),
        )
    else:
        env.update(gpu="none (CPU run)", driver="-")
    return env


def _driver_version() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "unknown"


# --------------------------------------------------------------------------------------------
# Steps 1-2: subprocesses (pytest)
# --------------------------------------------------------------------------------------------
def _subprocess(cmd: list[str], timeout: float, env_extra: dict, log: Path) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(env_extra)
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        log.write_text(f"$ {' '.join(cmd)}\nTIMEOUT after {timeout:.0f} s\n{err.stdout or ''}")
        raise RuntimeError(f"timed out after {timeout:.0f} s (see {log.name})") from err
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode not in (0, 5):  # 5: no tests collected
        raise RuntimeError(f"exit status {proc.returncode} (see {log.name})")
    tail = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    return tail[-1] if tail else ""


def gpu_tests(report: Report, step: Step) -> str:
    log = report.out / "gpu_tests.txt"
    cmd = [sys.executable, "-m", "pytest", "tests/kernels", "-m", "gpu", "-q", "-rs"]
    cmd += ["-p", "no:cacheprovider", f"--junitxml={report.out / 'gpu_tests.xml'}"]
    summary = _subprocess(cmd, report.timeout("gpu_tests"), {}, log)
    step.files += ["gpu_tests.txt", "gpu_tests.xml"]
    report.data["gpu_tests"] = summary
    return summary


def benches(report: Report, step: Step) -> str:
    out = report.out
    log = out / "benches.txt"
    cmd = [sys.executable, "-m", "pytest", "bench/test_bench_attention_scores.py"]
    cmd += ["bench/test_bench_token_select.py", "bench/test_bench_tree_attention.py", "-q"]
    cmd += ["-p", "no:cacheprovider", f"--benchmark-json={out / 'bench.json'}"]
    cmd += ["--benchmark-min-rounds=3", "--benchmark-max-time=0.02", "--benchmark-warmup=off"]
    summary = _subprocess(cmd, report.timeout("benches"), {"SPECVLM_BENCH_SHAPES": "report"}, log)
    table = out / "bench_table.md"
    plot = out / "roofline.png"
    cmd = [sys.executable, "bench/report.py", str(out / "bench.json"), "--table", str(table)]
    _subprocess([*cmd, "--plot", str(plot)], 60, {}, out / "bench_report.txt")
    step.files += ["benches.txt", "bench.json", "bench_table.md"]
    if plot.exists():
        step.files.append("roofline.png")
    # the analytic expectation of each case (a process of its own: it records launches on
    # meta tensors with the Triton backend forced)
    expected = out / "expected.json"
    env = {"TRITON_INTERPRET": ""}
    cmd = [sys.executable, "bench/roofline.py", "--json", str(expected), "--all"]
    _subprocess(cmd, 120, env, out / "expected.txt")
    step.files.append("expected.json")
    report.data["bench_summary"] = summary
    return summary


def _bench_key(info: dict) -> tuple | None:
    """The roofline case a bench record measures (triton / static implementations only)."""
    impl = info.get("impl")
    if "Lq" in info and impl == "triton":
        return ("scores", info["model"], info["Nv"], info["Lq"], info["dtype"])
    if "N" in info and impl in ("triton", "static"):
        op = "tree" if impl == "triton" else "tree-static"
        return (op, info["model"], info["L"], info["N"], info["dtype"])
    if "layout" in info and impl == "triton":
        if "C" in info:
            return ("prune", info["layout"], info["Nv"], info["keep"], info["C"])
        return ("select", info["layout"], info["Nv"], info["keep"])
    return None


def _expected_key(row: dict) -> tuple | None:
    op, s = row["op"], row["shape"]
    if op == "scores":
        return (op, s["model"], s["Nv"], s["Lq"], s["dtype"])
    if op in ("tree", "tree-static"):
        return (op, s["model"], s["L"], s["N"], s["dtype"])
    if op == "prune":
        return (op, s["layout"], s["Nv"], s["keep"], s["C"])
    if op == "select":
        return (op, s["layout"], s["Nv"], s["keep"])
    return None


def measured_vs_expected(out: Path) -> str:
    """Markdown: each timed kernel case beside its analytic H100 expectation."""
    bench, expected = out / "bench.json", out / "expected.json"
    if not bench.exists() or not expected.exists():
        return ""
    exp = {_expected_key(r): r for r in json.loads(expected.read_text())}
    lines = [
        "| case | measured us | expected us (H100 model) | measured / expected | GB/s | "
        "TFLOP/s | % HBM peak | % TC peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rec in json.loads(bench.read_text()).get("benchmarks", []):
        info = rec.get("extra_info", {})
        key = _bench_key(info)
        if key is None:
            continue
        us = info.get("median_us") or rec["stats"]["median"] * 1e6
        row = exp.get(key)
        e_us = row["expected_us"] if row else None
        ratio = f"{us / e_us:.2f}" if e_us else "-"

        def fmt(value, spec=".0f"):
            return "-" if value is None else format(value, spec)

        lines.append(
            f"| {rec['name']} | {us:.1f} | {fmt(e_us, '.1f')} | {ratio} | {fmt(info.get('gbs'))} "
            f"| {fmt(info.get('tflops'), '.1f')} | {fmt(info.get('pct_hbm_peak'))} "
            f"| {fmt(info.get('pct_tc_peak'))} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Step 3: the embedded pair end to end
# --------------------------------------------------------------------------------------------
def e2e(report: Report, step: Step, device, tiny: bool) -> str:
    import torch

    from specvlm.tools.bench import CheckpointWorkload
    from specvlm.tools.common import EMBEDDED
    from specvlm.tools.comparison import compare

    if device.type == "cpu":
        torch.set_num_threads(1)
    workload = CheckpointWorkload(
        str(EMBEDDED / "target"), str(EMBEDDED / "draft"), device, "Describe the video."
    )
    frames, new_tokens, repeats = (4, 8, 1) if tiny else (8, 48, 3)
    with torch.no_grad():
        warm = workload.inputs(frames, 0)
        compare(
            workload.target, workload.draft, warm, ("autoregressive", "specvlm"), max_new_tokens=4
        )
        records = compare(
            workload.target,
            workload.draft,
            workload.inputs(frames, 1),
            ("autoregressive", "naive_sd", "specvlm"),
            max_new_tokens=new_tokens,
            repeats=repeats,
            frames=frames,
        )
    dtype = str(next(workload.target.parameters()).dtype).replace("torch.", "")
    keep = (
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
    rows = [{k: r.get(k) for k in keep} for r in records]
    report.data["e2e"] = {"frames": frames, "dtype": dtype, "records": rows}
    (report.out / "e2e.json").write_text(json.dumps(report.data["e2e"], indent=2, default=str))
    step.files.append("e2e.json")
    bad = [r["method"] for r in rows if r.get("error") or r.get("identical") is False]
    if bad:
        raise RuntimeError(f"methods failed or differ from the target's output: {bad}")
    spec = next(r for r in rows if r["method"] == "specvlm")
    return (
        f"SpecVLM decode speedup {spec['decode_speedup']:.2f}x, tau {spec['mean_accepted_length']}"
    )


# --------------------------------------------------------------------------------------------
# Step 4: per-forward costs of real-config decoders
# --------------------------------------------------------------------------------------------
def build_decoder(name: str, spec: tuple, device, dtype):
    """A random-weight Qwen2 text decoder (what Qwen2.5-VL and LLaVA-OneVision run) from the
    config numbers, created on ``device`` in ``dtype`` (no download)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    hidden, inter, layers, heads, kv, vocab, tied = spec
    config = Qwen2Config(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=131072,
        rope_theta=1e6,
        attn_implementation="sdpa",
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    return model


def _fill_cache(model, context: int, device, dtype):
    import torch

    from specvlm.decoder import new_cache

    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    cache = new_cache()
    shape = (1, cfg.num_key_value_heads, context, head_dim)
    for layer in range(cfg.num_hidden_layers):
        k = torch.randn(shape, device=device, dtype=dtype)
        cache.update(k, torch.randn_like(k), layer)
    return cache


def time_forwards(model, context: int, nodes, device, dtype, repeats: int) -> dict[int, float]:
    """Median seconds of one decoder forward of ``n`` new tokens over ``context`` cached ones
    (the library's decoder call; the cache is cut back to ``context`` after each forward)."""
    import torch

    from specvlm.decoder import decoder_forward, keep_cache_entries

    cache = _fill_cache(model, context, device, dtype)
    decoder, head = model.model, model.lm_head
    times = {}
    for n in nodes:
        embeds = torch.randn(1, n, model.config.hidden_size, device=device, dtype=dtype)
        positions = torch.arange(context, context + n, device=device)[None]
        runs = []
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            began = time.perf_counter()
            decoder_forward(decoder, head, cache, embeds, positions, None, logits_rows=slice(None))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:  # the first is a warm-up
                runs.append(time.perf_counter() - began)
            keep_cache_entries(cache, context, [])
        times[n] = sorted(runs)[len(runs) // 2]
    del cache
    return times


def decoders(report: Report, step: Step, device, tiny: bool) -> str:
    import torch

    specs = TINY_DECODERS if tiny else DECODERS
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    contexts = CONTEXTS["tiny" if tiny else "gpu"]
    rows = []
    with torch.no_grad():
        for name, spec in specs.items():
            model = build_decoder(name, spec, device, dtype)
            params = sum(p.numel() for p in model.parameters())
            for context in contexts:
                times = time_forwards(model, context, NODES, device, dtype, 3 if tiny else 5)
                for n, seconds in times.items():
                    rows.append(
                        dict(
                            model=name,
                            role=ROLES[name],
                            params=params,
                            layers=spec[2],
                            heads=spec[3],
                            kv_heads=spec[4],
                            head_dim=spec[0] // spec[3],
                            bytes_per_param=torch.empty((), dtype=dtype).element_size(),
                            context=context,
                            tokens=n,
                            seconds=seconds,
                        )
                    )
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report.data["decoders"] = rows
    (report.out / "decoders.json").write_text(json.dumps(rows, indent=2))
    step.files.append("decoders.json")
    return f"{len(rows)} forwards timed ({len(specs)} models x {len(contexts)} contexts x 3)"


# --------------------------------------------------------------------------------------------
# Step 5: the performance model fed with the measured forwards
# --------------------------------------------------------------------------------------------
def datasheet_gpu(name: str):
    from specvlm.tools.perf_model import H100, Gpu

    for key, (tflops, gbs) in DATASHEET.items():
        if key in name:
            return Gpu(name, gbs, tflops)
    return replace(H100, name=f"{name} (H100 datasheet)")


def _llm(row: dict):
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


def fit_gpu(rows: list[dict], base):
    """The perf model's GPU with ``bw_fraction``, ``tc_fraction`` and ``launch_us`` fitted to
    the measured forwards (least squares on log times, grid search)."""
    from specvlm.tools.perf_model import forward_seconds

    models = [(_llm(r), r["tokens"], r["context"], r["seconds"]) for r in rows]

    def loss(gpu) -> float:
        return sum(
            math.log(forward_seconds(m, gpu, t, c) / s) ** 2 for m, t, c, s in models if s > 0
        )

    best, best_loss = base, loss(base)
    for bw in [0.2 + 0.05 * i for i in range(21)]:
        for tc in [0.05 + 0.05 * i for i in range(20)]:
            for launch in [0.5 * 1.25**i for i in range(30)]:
                gpu = replace(base, bw_fraction=bw, tc_fraction=tc, launch_us=launch)
                value = loss(gpu)
                if value < best_loss:
                    best, best_loss = gpu, value
    return best, best_loss


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


def measured_projection(rows: list[dict], tiny: bool) -> str:
    """Decode speedups of naive SD and SpecVLM from the measured forwards: the performance
    model's step and decode costs (:func:`specvlm.tools.perf_model.step_seconds`,
    :func:`~specvlm.tools.perf_model.decode_seconds`) on :class:`~specvlm.tools.perf_model.
    Measured` cost sources, as :func:`~specvlm.tools.perf_model.project` computes them on the
    roofline (default tree of 48 nodes, depth 6; tau 3.9 for both; drop rate 0.9; 200 text
    tokens; 256 new tokens)."""
    from specvlm.tools.perf_model import Measured, decode_seconds, step_seconds
    from specvlm.trees import tree_of_size

    by_model: dict[str, list[dict]] = {}
    for r in rows:
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


def perf_model(report: Report, step: Step, gpu_name: str, tiny: bool) -> str:
    from specvlm.tools.perf_model import forward_seconds, table

    rows = report.data.get("decoders")
    if not rows:
        raise RuntimeError("no decoder timings to fit (the decoders step failed)")
    base = datasheet_gpu(gpu_name)
    fitted, loss = fit_gpu(rows, base)
    lines = [
        f"Datasheet GPU: {base.name}: {base.hbm_gbs:.0f} GB/s, {base.tc_tflops:.0f} TFLOP/s, "
        f"bw_fraction {base.bw_fraction}, tc_fraction {base.tc_fraction}, "
        f"launch_us {base.launch_us}.",
        f"Fitted to the measured forwards: bw_fraction {fitted.bw_fraction:.2f}, tc_fraction "
        f"{fitted.tc_fraction:.2f}, launch_us {fitted.launch_us:.1f} (rms log error "
        f"{math.sqrt(loss / len(rows)):.2f}).",
        "",
        "| model | role | context | tokens | measured ms | datasheet model ms | fitted model ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        llm = _llm(r)
        ds = forward_seconds(llm, base, r["tokens"], r["context"]) * 1e3
        fit = forward_seconds(llm, fitted, r["tokens"], r["context"]) * 1e3
        lines.append(
            f"| {r['model']} | {r['role']} | {r['context']} | {r['tokens']} "
            f"| {r['seconds'] * 1e3:.2f} | {ds:.2f} | {fit:.2f} |"
        )
    lines += [
        "",
        "Decode speedups on the measured forwards themselves (the model's step and decode "
        "costs on `Measured` cost sources; tau 3.9, drop rate 0.9, the default 48-node tree):",
        "",
        measured_projection(rows, tiny),
        "",
    ]
    lines += ["Projections with the datasheet GPU:", "", table(base), ""]
    lines += ["Projections with the fitted GPU (measured forwards):", "", table(fitted), ""]
    text = "\n".join(lines)
    (report.out / "perf_model.md").write_text(text + "\n")
    report.data["perf_model"] = {"datasheet": asdict(base), "fitted": asdict(fitted)}
    report.data["perf_model_md"] = text
    step.files.append("perf_model.md")
    return (
        f"fitted bw {fitted.bw_fraction:.2f}, tc {fitted.tc_fraction:.2f}, "
        f"launch {fitted.launch_us:.1f} us"
    )


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------
def _e2e_table(data: dict) -> str:
    lines = [
        "| method | new tokens | tau | decode s | end-to-end s | decode speedup | e2e speedup "
        "| identical to target | video tokens kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def f(value, spec):
        return "-" if value is None else format(value, spec)

    for r in data["records"]:
        kept = f"{r.get('kept_video_tokens')} / {r.get('video_tokens')}"
        lines.append(
            f"| {r['method']} | {r['new_tokens']} | {f(r['mean_accepted_length'], '.2f')} "
            f"| {f(r['decode_s'], '.3f')} | {f(r['e2e_s'], '.3f')} "
            f"| {f(r['decode_speedup'], '.2f')} | {f(r['e2e_speedup'], '.2f')} "
            f"| {r['identical']} | {kept} |"
        )
    return "\n".join(lines) + "\n"


def write_page(report: Report, env: dict) -> Path:
    where = f"{env['gpu']}, driver {env['driver']}"
    versions = (
        f"Python {env['python']}, torch {env['torch']} (CUDA {env['cuda_runtime']}), "
        f"Triton {env['triton']}, transformers {env['transformers']}"
    )
    lines = [
        f"# SpecVLM GPU report ({report.mode})",
        "",
        f"* GPU: {where}"
        + (f", {env['sms']} SMs, {env['memory_gib']} GiB" if "sms" in env else ""),
        f"* Software: {versions}",
        f"* Host: {env['host']} ({env['cpu']}); TRITON_INTERPRET={env['triton_interpret'] or '-'}",
        f"* Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; "
        f"total {time.monotonic() - report.start:.0f} s",
        "",
        "| step | status | seconds | result | files |",
        "|---|---|---|---|---|",
    ]
    for s in report.steps:
        files = ", ".join(s.files)
        detail = s.detail.replace("|", "/").replace("\n", " ")[:200]
        lines.append(
            f"| {s.name} | {'ok' if s.ok else 'FAILED'} | {s.seconds:.0f} | {detail} | {files} |"
        )
    compared = measured_vs_expected(report.out)
    if compared:
        lines += ["", f"## Kernels: measured on {where} vs the analytic H100 model", ""]
        lines += [f"{versions}.", "", compared]
    table = report.out / "bench_table.md"
    if table.exists():
        lines += ["", f"## Kernel benches ({where})", "", table.read_text()]
    if "e2e" in report.data:
        e = report.data["e2e"]
        lines += ["", f"## Embedded pair end to end ({where}, {e['dtype']}, {e['frames']} frames)"]
        lines += ["", _e2e_table(e)]
    if "perf_model_md" in report.data:
        lines += ["", f"## Performance model fed with measured forwards ({where})", ""]
        lines += [report.data["perf_model_md"]]
    page = report.out / "REPORT.md"
    page.write_text("\n".join(lines) + "\n")
    (report.out / "results.json").write_text(
        json.dumps(
            {"env": env, "steps": [asdict(s) for s in report.steps], **report.data},
            indent=2,
            default=str,
        )
    )
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU run with small shapes (CI)")
    parser.add_argument("--out", default=None, help="results folder (default gpu-report-<time>)")
    parser.add_argument(
        "--skip", default="", help="comma-separated steps to skip (gpu_tests,benches,e2e,decoders)"
    )
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("gpu_report: no CUDA device here; use --tiny for the CPU run", file=sys.stderr)
        return 2
    if cuda:
        os.environ.pop("TRITON_INTERPRET", None)  # the kernels must run compiled
    mode = "tiny" if args.tiny else "gpu"
    out = Path(args.out or f"gpu-report-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, mode)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    device = torch.device("cuda" if cuda and not args.tiny else "cpu")

    env = environment(cuda)
    (out / "env.json").write_text(json.dumps(env, indent=2))
    steps = [
        ("gpu_tests", lambda s: gpu_tests(report, s)),
        ("benches", lambda s: benches(report, s)),
        ("e2e", lambda s: e2e(report, s, device, args.tiny)),
        ("decoders", lambda s: decoders(report, s, device, args.tiny)),
        ("perf_model", lambda s: perf_model(report, s, env["gpu"] if cuda else "H100", args.tiny)),
    ]
    for name, fn in steps:
        if name in skip or (name == "perf_model" and "decoders" in skip):
            continue
        report.run(name, fn)
    page = write_page(report, env)
    print(f"[gpu_report] {page}")
    return 0 if all(s.ok for s in report.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
