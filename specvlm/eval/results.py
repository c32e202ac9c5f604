"""What ``specvlm eval`` writes to its output directory, and how a run resumes (no torch).

* ``run.json``: the run's settings (benchmark, checkpoints, protocol, SpecVLM options). A run
  resumes only with the same settings; anything else is refused in one line (``--restart``
  starts over).
* ``samples.jsonl``: one line per finished sample, appended and flushed as each finishes, so an
  interrupted run loses at most the sample in progress (a torn last line is dropped on resume).
* ``summary.json``, ``table.md`` (paper-style, markdown) and ``plot.png``: rewritten at the end
  of every run from all the samples so far.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from specvlm.tools.common import ToolError

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
TABLE_FILE = "table.md"
PLOT_FILE = "plot.png"


def open_run(out_dir: str, settings: dict, restart: bool = False) -> dict[str, dict]:
    """Prepare ``out_dir`` for a run with ``settings``; return the samples already finished
    there by a run with the same settings (``{id: record}``; failed ones are not: they run
    again). :class:`ToolError` when the
    directory holds another run's samples (unless ``restart``, which removes them)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_path, samples_path = out / RUN_FILE, out / SAMPLES_FILE
    if restart:
        for name in (RUN_FILE, SAMPLES_FILE, SUMMARY_FILE, TABLE_FILE, PLOT_FILE):
            (out / name).unlink(missing_ok=True)
    if run_path.exists():
        _check_same_run(run_path, settings, out_dir)
    elif samples_path.exists():
        raise ToolError(
            f"{samples_path} exists without {RUN_FILE}: not a specvlm eval directory? "
            "(--restart replaces it)"
        )
    run_path.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
    done = read_samples(samples_path)
    return {k: r for k, r in done.items() if not r.get("error")}  # failed samples: again


def _check_same_run(run_path: Path, settings: dict, out_dir: str) -> None:
    try:
        before = json.loads(run_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ToolError(f"{run_path} is unreadable ({err}); --restart starts over") from err
    changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
    if changed:
        what = ", ".join(f"{k} {before.get(k)!r} -> {settings.get(k)!r}" for k in changed[:3])
        raise ToolError(
            f"{out_dir} holds a run with other settings ({what}); resume it with the same "
            "options, or give another --out, or --restart"
        )


def read_samples(path: Path) -> dict[str, dict]:
    """The records of ``samples.jsonl`` by sample id; a torn last line (an interrupted write) is
    dropped from the file; a broken line before it is a :class:`ToolError`."""
    if not path.exists():
        return {}
    text = path.read_text()
    if text and not text.endswith("\n"):  # a last line cut before its newline: end it
        with open(path, "a") as f:
            f.write("\n")
    lines = text.splitlines()
    records: dict[str, dict] = {}
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            records[record["id"]] = record
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            if number < len(lines):
                raise ToolError(f"{path} line {number} is broken ({err}); --restart") from err
            path.write_text("".join(f"{kept}\n" for kept in lines[:-1]))  # the torn last line
    return records


def append_sample(out_dir: str, record: dict) -> None:
    """Add one finished sample to ``samples.jsonl``, on disk before this returns."""
    with open(Path(out_dir) / SAMPLES_FILE, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _rate(records: list[dict], path: str, what: str) -> float | None:
    """Tokens per second of ``path`` over all ``records``: decode counts the tokens after the
    first (the first comes from the prefill), end to end counts them all."""
    seconds = sum(r[f"{path}_{what}_s"] for r in records)
    tokens = sum(r[f"{path}_new_tokens"] - (what == "decode") for r in records)
    return tokens / seconds if seconds > 0 and tokens > 0 else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def speedup(records: list[dict], what: str) -> float | None:
    """SpecVLM's ``what`` ("decode" or "e2e") speedup per token over the target alone, on
    ``records`` together (one record: that sample's own)."""
    return _ratio(_rate(records, "specvlm", what), _rate(records, "target", what))


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarize(records: list[dict], settings: dict, published: dict | None = None) -> dict:
    """The run's numbers: ``samples``, ``identical`` (samples whose answers are the target's,
    token for token; None when sampling), ``tau`` (mean accepted tokens per verification, bonus
    included, over the samples that speculated), ``failed`` (samples whose video could not be
    read, left out of every number; ``first_failure`` says which and why), ``decode_speedup``
    and ``e2e_speedup`` (the target's time per token over SpecVLM's, over all samples), the
    task's accuracy for each path where the benchmark has one, and the published numbers to
    compare with."""
    failed = [r for r in records if r.get("error")]
    records = [r for r in records if not r.get("error")]
    compared = [r["identical"] for r in records if r["identical"] is not None]
    rates = {f"{what}_speedup": speedup(records, what) for what in ("decode", "e2e")}
    return {
        "benchmark": settings["benchmark"],
        "samples": len(records),
        "failed": len(failed),
        "first_failure": f"{failed[0]['id']}: {failed[0]['error']}" if failed else None,
        # a count where every sample was compared (greedy); None where they were sampled
        "identical": sum(compared) if len(compared) == len(records) else None,
        "all_identical": all(compared) if compared else None,
        "tau": _mean([r["tau"] for r in records]),
        **rates,
        "target_accuracy": _mean([r["target_score"] for r in records]),
        "specvlm_accuracy": _mean([r["specvlm_score"] for r in records]),
        "video_tokens": _mean([r["video_tokens"] for r in records]),
        "kept_video_tokens": _mean([r["kept_video_tokens"] for r in records]),
        "target_decode_tokens_per_s": _rate(records, "target", "decode"),
        "specvlm_decode_tokens_per_s": _rate(records, "specvlm", "decode"),
        "published": published or {},
        "settings": settings,
    }


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _times(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(summary: dict) -> str:
    """A paper-style markdown table of a summary: the measured row and the published one."""
    s, pub = summary, summary["published"]
    same = "-" if s["identical"] is None else f"{s['identical']}/{s['samples']}"
    acc = f"{_cell(s['target_accuracy'], '.1%')} / {_cell(s['specvlm_accuracy'], '.1%')}"
    settings = s["settings"]
    rows = [
        "| run | samples | video tokens (kept) | identical | tau | decode speedup | "
        "end-to-end speedup | accuracy target / SpecVLM |",
        "|---|---|---|---|---|---|---|---|",
        f"| this run | {s['samples']} | {_cell(s['video_tokens'], '.0f')} "
        f"({_cell(s['kept_video_tokens'], '.0f')}) | {same} | {_cell(s['tau'], '.2f')} | "
        f"{_times(s['decode_speedup'])} | {_times(s['e2e_speedup'])} | {acc} |",
    ]
    if s["failed"]:
        rows[-1] += f" ({s['failed']} failed samples left out: first {s['first_failure']})"
    if pub:
        rows.append(
            f"| published ({pub.get('setting', '')}) | {pub.get('samples', '-')} | "
            f"{pub.get('video_tokens', '-')} | - | {_cell(pub.get('tau'), '.2f')} | "
            f"{_times(pub.get('decode_speedup'))} | {_times(pub.get('e2e_speedup'))} | - |"
        )
    head = (
        f"## {s['benchmark']}: {settings['target']} with draft {settings['draft']}\n\n"
        f"{settings['frames']} frames, up to {settings['max_new_tokens']} new tokens, "
        f"{settings['decoding']}, SpecVLM {settings['specvlm']}; {settings['hardware']}.\n"
    )
    return head + "\n" + "\n".join(rows) + "\n"


def plot(records: list[dict], path: str, title: str) -> None:
    """Per sample: SpecVLM's decode speedup against its tau (the target's answers beside)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    taus = [r["tau"] for r in records]
    speedups = [r["decode_speedup"] for r in records]
    pairs = [(t, v) for t, v in zip(taus, speedups, strict=True) if t is not None and v is not None]
    if pairs:
        left.scatter(*zip(*pairs, strict=True), s=14)
    left.axhline(1.0, color="grey", lw=0.8)
    left.set(xlabel="tau (accepted tokens per verification)", ylabel="decode speedup (x)")
    right.hist([t for t in taus if t is not None], bins=20)
    right.set(xlabel="tau", ylabel="samples")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
