"""Dynamic draft trees on this CPU: the embedded pair, ``tree="dynamic"`` against the static tree
of the same verification budget (``tree_of_size``: the best static tree of that many nodes under
the default acceptance assumption), and the automatic policy (its own choice: among static trees,
and among static and dynamic trees with ``AutoPolicy(dynamic_budgets=(16, 32))``), on held-out
caption questions, greedy. Every output is checked against the target's ``generate``.

    PYTHONPATH=. python bench/dynamic_tree_cpu.py [--clips 24] [--frames 32] [--budgets 8,16,32,48]
        [--repeats 2] [--depth 6] [--capture] [--out docs/bench/dynamic_tree_cpu.json]

Per budget and clip, the static and the dynamic tree run alternately ``--repeats`` times (the
fastest decode counts); tau is tokens per verification (bonus included) over all clips; decode
is summed over clips. The policy's rows are its own choice per call (one decoder for the whole
run, so it learns as a user's would), after one untimed warm-up call. ``--budgets ""`` runs the
policy's rows alone. ``--capture``: every decoder with ``capture=True`` (both models' steps
compiled by inductor on this CPU, in width buckets; each decoder's compiling done in an untimed
call first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

import specvlm
from specvlm.dynamic_tree import DynamicTree
from specvlm.tools.micro_bench import caption_prompts, embedded_pair_and_prompter
from specvlm.trees import tree_of_size

DYNAMIC_BUDGETS = (16, 32)  # the automatic policy's dynamic candidates (its second row)


def _run(sd, inputs, expected, max_new_tokens: int, repeats: int):
    best = None
    for _ in range(repeats):
        out = sd.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        if not torch.equal(out, expected):
            raise AssertionError("an output differs from the target's")
        if best is None or sd.last_stats.decode < best.decode:
            best = sd.last_stats
    return best


def _row(name: str, runs: list) -> dict:
    steps = sum(len(s.accepted_lengths) for s in runs)
    tokens = sum(sum(s.accepted_lengths) for s in runs)
    return {
        "method": name,
        "tau": tokens / steps if steps else None,
        "decode_s": sum(s.decode for s in runs),
        "steps": steps,
        "tree_sizes": sorted({s.tree_size for s in runs}),
        "trees": sorted({"dynamic" if isinstance(s.tree, DynamicTree) else "static" for s in runs}),
        "captured_calls": sum(bool(s.captured and s.target_captured) for s in runs),
    }


def _tau(row: dict) -> str:
    """A row's tau as printed ("-" where no call speculated)."""
    return "-" if row["tau"] is None else f"{row['tau']:.2f}"


def measure(
    target,
    draft,
    prompts,
    budgets,
    repeats: int,
    max_new_tokens: int,
    depth: int = 6,
    capture: bool = False,
) -> list[dict]:
    expected = [
        target.generate(**p, do_sample=False, max_new_tokens=max_new_tokens) for p in prompts
    ]
    rows = []
    for budget in budgets:
        static = specvlm.accelerate(
            (target, draft),
            drop_rate=0.9,
            tree=tree_of_size(budget, max_depth=depth),
            capture=capture,
        )
        dynamic = specvlm.accelerate(
            (target, draft),
            drop_rate=0.9,
            tree=DynamicTree(budget=budget, depth=depth),
            capture=capture,
        )
        for sd in (static, dynamic) if capture else ():  # compiles its widths, untimed
            sd.generate(**prompts[0], do_sample=False, max_new_tokens=max_new_tokens)
        runs: dict = {"static": [], "dynamic": []}
        for inputs, exp in zip(prompts, expected, strict=True):
            for name, sd in (("static", static), ("dynamic", dynamic)):
                runs[name].append(_run(sd, inputs, exp, max_new_tokens, repeats))
        for name in ("static", "dynamic"):
            rows.append(dict(_row(f"{name} {budget}", runs[name]), budget=budget))
    policies = {
        "auto (static trees)": specvlm.AutoPolicy(),
        "auto (static and dynamic trees)": specvlm.AutoPolicy(dynamic_budgets=DYNAMIC_BUDGETS),
    }
    for name, policy in policies.items():
        auto = specvlm.accelerate((target, draft), policy=policy, capture=capture)
        auto.generate(**prompts[0], do_sample=False, max_new_tokens=max_new_tokens)  # calibrates
        runs = [
            _run(auto, p, e, max_new_tokens, repeats)
            for p, e in zip(prompts, expected, strict=True)
        ]
        row = dict(_row(name, runs), budget=None)
        row["dynamic_calls"] = sum(isinstance(s.tree, DynamicTree) for s in runs)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--budgets", default="8,16,32,48")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--depth", type=int, default=6, help="the dynamic tree's depth limit")
    parser.add_argument("--capture", action="store_true", help="capture=True everywhere")
    parser.add_argument("--out", default="docs/bench/dynamic_tree_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    target, draft, prompter = embedded_pair_and_prompter()
    prompts = caption_prompts(prompter, args.clips, args.frames)
    budgets = [int(b) for b in args.budgets.split(",") if b]  # "": the policy's rows only
    with torch.no_grad():
        rows = measure(
            target,
            draft,
            prompts,
            budgets,
            args.repeats,
            args.max_new_tokens,
            args.depth,
            args.capture,
        )
    by_name = {r["method"]: r for r in rows}
    print("| trees | tau | decode s | steps |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {_tau(r)} | {r['decode_s']:.3f} | {r['steps']} |")
    for b in budgets:
        s, d = by_name[f"static {b}"], by_name[f"dynamic {b}"]
        print(
            f"budget {b}: tau {d['tau'] / s['tau']:.2f}x the static tree's, "
            f"decode {s['decode_s'] / d['decode_s']:.2f}x"
        )
    static, both = by_name["auto (static trees)"], by_name["auto (static and dynamic trees)"]
    print(
        f"the policy with dynamic candidates: {both['dynamic_calls']} of {args.clips} calls "
        f"dynamic, tau {_tau(both)} vs {_tau(static)}, "
        f"decode {static['decode_s'] / both['decode_s']:.2f}x the policy's with static trees"
    )
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, 1 torch thread",
        "torch": torch.__version__,
        "clips": args.clips,
        "frames": args.frames,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "drop_rate": 0.9,
        "dynamic_depth": args.depth,
        "capture": args.capture,
    }
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
