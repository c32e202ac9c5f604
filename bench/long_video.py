"""Where pruning pays on this machine: the embedded micro pair from 8 frames (129 video tokens) to
the longest clip its 1024 positions take (60 frames, 961 video tokens), the target alone, naive
SD (drop rate 0), SpecVLM (drop rate 0.9) and the automatic policy.

    PYTHONPATH=. python bench/long_video.py [--frames 8,16,32,60] [--clips 4] [--repeats 3]
        [--out docs/bench/long_video.json] [--plot docs/bench/long_video.png]

Every method runs on the same held-out clips, alternating, ``--repeats`` times; each time (first
token, decode, end to end) is the fastest of its runs, summed over the clips. Naive SD and
SpecVLM use the same tree (``--tree``, default 8 nodes). Naive SD does not score the video: the
loop scores it at a fixed drop rate 0 only to report the scores, and a naive baseline would not.
The automatic policy keeps one decoder over the whole run (it learns), warmed up on other clips.
Memory: the draft's KV cache at the end of a call, from the tokens it held (prompt tokens it
saw, plus drafted and emitted ones) times its bytes per token; on this CPU there is no
allocator to read a peak from, and the caches are the only memory that depends on the method.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from transformers import AutoConfig

import specvlm
from specvlm.micro.data import held_out_clip
from specvlm.tools.common import EMBEDDED, hardware, inputs_to, load_pair
from specvlm.tools.timing import timed
from specvlm.tools.video_input import VideoPrompter
from specvlm.trees import tree_of_size

PROMPT = "describe the video ."
METHODS = ("autoregressive", "naive_sd", "specvlm", "auto")


def kv_bytes_per_token(model) -> int:
    cfg = model.config.get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    size = next(model.parameters()).element_size()
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * size


def _generate(generate, inputs: dict, new: int, streamer):
    return generate(**inputs, streamer=streamer, max_new_tokens=new, do_sample=False)


def measure(target, draft, prompter, frames, clips, repeats, new, tree, auto) -> dict:
    naive = specvlm.accelerate((target, draft), drop_rate=0.0, tree=tree)
    naive.settings = replace(naive.settings, score_video=False)  # a naive baseline: no scores
    pruned = specvlm.accelerate((target, draft), drop_rate=0.9, tree=tree)
    calls = {"autoregressive": target.generate, "naive_sd": naive.generate}
    calls.update(specvlm=pruned.generate, auto=auto.generate)
    decoders = {"naive_sd": naive, "specvlm": pruned, "auto": auto}
    per_token = kv_bytes_per_token(draft)
    totals = {m: dict(ttft_s=0.0, decode_s=0.0, e2e_s=0.0, new_tokens=0) for m in METHODS}
    extra = {
        m: dict(taus=[], draft_kv_bytes=0, draft_prefill_s=0.0, scoring_s=0.0, choices=[])
        for m in METHODS
    }
    video = None
    for clip in range(clips):
        inputs = inputs_to(
            prompter(held_out_clip(clip, frames=frames), PROMPT), torch.device("cpu")
        )
        prompt = inputs["input_ids"].shape[1]
        best: dict[str, dict] = {}
        for _ in range(repeats):
            for method in METHODS:
                out, t = timed(partial(_generate, calls[method], inputs, new))
                b = best.setdefault(method, dict(ttft_s=1e9, decode_s=1e9, e2e_s=1e9))
                for key in ("ttft_s", "decode_s", "e2e_s"):
                    b[key] = min(b[key], getattr(t, key))
                b["new_tokens"] = t.new_tokens
                if method in decoders:
                    st = decoders[method].last_stats
                    video = st.video_tokens or video
                    b["stats"] = st
        for method in METHODS:
            for key in ("ttft_s", "decode_s", "e2e_s", "new_tokens"):
                totals[method][key] += best[method][key]
            st = best[method].get("stats")
            if st is None:
                continue
            e = extra[method]
            if st.speculated and st.accepted_lengths:
                e["taus"].append(st.mean_accepted_length)
            held = 0
            if st.speculated:
                seen = prompt - st.video_tokens + st.kept_video_tokens
                held = seen + st.new_tokens + st.tree_size
            e["draft_kv_bytes"] = max(e["draft_kv_bytes"], held * per_token)
            e["draft_prefill_s"] += st.draft_prefill
            e["scoring_s"] += st.scoring
            e["choices"].append(
                f"{'spec' if st.speculated else 'plain'} d{st.drop_rate:g} n{st.tree_size}"
            )
    ref = totals["autoregressive"]
    rows = []
    for method in METHODS:
        tot, e = totals[method], extra[method]
        decode_speedup = (ref["decode_s"] / (ref["new_tokens"] - clips)) / (
            tot["decode_s"] / (tot["new_tokens"] - clips)
        )
        rows.append(
            dict(
                frames=frames,
                video_tokens=video,
                method=method,
                tau=sum(e["taus"]) / len(e["taus"]) if e["taus"] else None,
                decode_speedup=decode_speedup,
                e2e_speedup=ref["e2e_s"] / tot["e2e_s"] * tot["new_tokens"] / ref["new_tokens"],
                ttft_ms=1e3 * tot["ttft_s"] / clips,
                decode_ms=1e3 * tot["decode_s"] / clips,
                e2e_ms=1e3 * tot["e2e_s"] / clips,
                draft_prefill_ms=1e3 * e["draft_prefill_s"] / clips,
                scoring_ms=1e3 * e["scoring_s"] / clips,
                draft_kv_kib=e["draft_kv_bytes"] / 1024,
                new_tokens=tot["new_tokens"],
                choices=sorted(set(e["choices"])),
            )
        )
    return rows


def crossover(rows: list[dict], key: str, higher_is_better: bool) -> int | None:
    """The smallest video length from which SpecVLM beats naive SD on ``key`` at every longer
    measured length; None if it does not at the longest."""
    by = {}
    for r in rows:
        by.setdefault(r["video_tokens"], {})[r["method"]] = r[key]
    lengths = sorted(by)
    wins = [
        (by[n]["specvlm"] > by[n]["naive_sd"]) == higher_is_better
        and by[n]["specvlm"] != by[n]["naive_sd"]
        for n in lengths
    ]
    if not wins[-1]:
        return None
    i = len(wins) - 1
    while i > 0 and wins[i - 1]:
        i -= 1
    return lengths[i]


def plot(rows: list[dict], path: str, where: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"autoregressive": "#333333", "naive_sd": "#9467bd", "specvlm": "#d62728"}
    colors["auto"] = "#17becf"
    panels = (
        ("decode_speedup", "decode speedup vs target generate"),
        ("e2e_speedup", "end-to-end speedup vs target generate"),
        ("ttft_ms", "time to first token (ms per clip)"),
        ("draft_kv_kib", "draft KV cache at the end (KiB)"),
    )
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), layout="constrained")
    for ax, (key, label) in zip(axes, panels, strict=True):
        for method in METHODS:
            mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["frames"])
            if key == "draft_kv_kib" and method == "autoregressive":
                continue
            ax.plot(
                [r["video_tokens"] for r in mine],
                [r[key] for r in mine],
                marker="o",
                color=colors[method],
                label=method + (" (drop 0)" if method == "naive_sd" else ""),
            )
        ax.set_xlabel("video tokens")
        ax.set_ylabel(label)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"embedded micro pair, long clips, on {where}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="8,16,32,60")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--tree", type=int, default=8, help="tree size of naive SD and SpecVLM")
    parser.add_argument("--out", default="docs/bench/long_video.json")
    parser.add_argument("--plot", default="docs/bench/long_video.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tdir, ddir = str(EMBEDDED / "target"), str(EMBEDDED / "draft")
    target, draft = load_pair(tdir, ddir, torch.device("cpu"))
    prompter = VideoPrompter(tdir, AutoConfig.from_pretrained(tdir))
    limit = target.config.get_text_config().max_position_embeddings
    auto = specvlm.accelerate((target, draft))
    with torch.no_grad():  # warm-up; the automatic policy's first calls (other clips)
        for seed in (300, 301, 302):
            inputs = inputs_to(prompter(held_out_clip(seed), PROMPT), torch.device("cpu"))
            auto.generate(**inputs, max_new_tokens=args.max_new_tokens)
    rows = []
    for frames in (int(f) for f in args.frames.split(",")):
        length = prompter(held_out_clip(0, frames=frames), PROMPT)["input_ids"].shape[1]
        if length + args.max_new_tokens > limit:
            print(f"{frames} frames: {length} prompt tokens exceed {limit} positions; skipped")
            continue
        rows += measure(
            target,
            draft,
            prompter,
            frames,
            args.clips,
            args.repeats,
            args.max_new_tokens,
            tree_of_size(args.tree),
            auto,
        )
        for r in rows[-len(METHODS) :]:
            print(
                json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})
            )
        sys.stdout.flush()
    result = {
        "hardware": hardware(torch.device("cpu")),
        "torch": torch.__version__,
        "command": " ".join(["python", "bench/long_video.py", *sys.argv[1:]]),
        "clips": args.clips,
        "repeats": args.repeats,
        "tree": args.tree,
        "rows": rows,
        "crossover": {
            "decode": crossover(rows, "decode_speedup", True),
            "e2e": crossover(rows, "e2e_speedup", True),
            "ttft": crossover(rows, "ttft_ms", False),
            "draft_kv": crossover(rows, "draft_kv_kib", False),
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    plot(rows, args.plot, result["hardware"])
    print(json.dumps(result["crossover"]))
    print(f"wrote {args.out}, {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
