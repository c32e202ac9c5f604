"""What ``specvlm demo`` prints: the answer, whether it is the target's, what SpecVLM chose, and
every path side by side (the target alone, eager and compiled; naive SD; SpecVLM), with
speedups against both baselines."""

from __future__ import annotations

from specvlm.tools.common import describe_sampling


def _times(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _count(n: int) -> str:
    return f"{n} token{'s' * (n != 1)}"


def print_record(rec: dict) -> None:
    """The demo's results, as printed (``rec``: the demo's record)."""
    print(f"question : {rec['prompt']}")
    if rec["mode"] == "greedy":
        print(f"answer   : {rec['text']}")
        same = "yes" if rec["identical"] else "NO"
        print(f"identical to the target's own greedy answer: {same}")
    else:
        seed = rec["seed"]
        print(f"{describe_sampling(rec['sampling'], seed)} (every path seeded with {seed})")
        print(f"SpecVLM  : {rec['text']}")
        print(f"target   : {rec['target_text']}")
        print(
            "SpecVLM's answer is a sample of the target's own distribution (lossless sampling), "
            "not a copy of the target's sample: the two may differ"
        )
        if rec["policy"] == "auto":
            print(
                "the same seed repeats this answer only where the automatic policy makes the same "
                "choices (it chooses from measured timings); --drop-rate and --tree-size fix them"
            )
    tokens = f"{_count(rec['new_tokens'])} on {rec['device']}"
    if rec["mode"] == "sample":
        tokens = (
            f"SpecVLM {_count(rec['new_tokens'])}, target {rec['target_new_tokens']}; time per "
            f"token; on {rec['device']}"
        )
    _print_choice(rec)
    if rec["decoded"]:
        print(
            f"SpecVLM against the target alone: decode {_times(rec['decode_speedup'])}, "
            f"end-to-end {_times(rec['e2e_speedup'])}   ({tokens})"
        )
    else:
        print(f"end-to-end: {_times(rec['e2e_speedup'])}   ({tokens})")
    if rec["decoded"]:
        print_side_by_side(rec)


def _print_choice(rec: dict) -> None:
    """What SpecVLM did: its policy's choice, tau and the video tokens the draft saw, or why
    nothing was speculated."""
    if not rec["decoded"]:
        why = (
            "--max-new-tokens 1"
            if rec["max_new_tokens"] == 1
            else "the answer ended at its first token"
        )
        print(
            f"nothing speculated ({why}): the first token comes from the target's prefill, "
            "so no video token was pruned, nothing was drafted or verified: no tau, no decode "
            "time to compare"
        )
        return
    policy = "automatic policy" if rec["policy"] == "auto" else "fixed settings"
    if not rec["speculated"]:
        print(f"SpecVLM ({policy}) decoded with the target alone: {rec['reason']}")
        return
    print(
        f"SpecVLM ({policy}): drop rate {rec['drop_rate']:g}, {rec['tree_size']}-node tree, "
        f"draft steps {'captured' if rec['captured'] else 'eager'}"
        + (f"; {rec['reason']}" if rec["reason"] else "")
    )
    print(f"tau (tokens per target forward): {rec['mean_accepted_length']:.2f}")
    print(f"video tokens given to the draft: {rec['kept_video_tokens']} of {rec['video_tokens']}")


def _rows(rec: dict) -> list[tuple]:
    """(name, tau, decode, e2e, decode vs compiled, e2e vs compiled, first token seconds) of
    every path that ran."""
    rows = []
    naive = f"naive SD (drop 0, {rec['naive_tree_size']} nodes)"
    paths = (
        ("target", "target alone (generate)", None),
        ("compiled", "target compiled", None),
        ("naive", naive, "naive_mean_accepted_length"),
    )
    for prefix, name, tau in paths:
        if rec[f"{prefix}_e2e_s"] is None:  # --no-compile
            continue
        rows.append(
            (name, rec[tau] if tau else None)
            + tuple(rec[f"{prefix}_{k}"] for k in _SPEEDUPS)
            + (rec[f"{prefix}_ttft_s"],)
        )
    rows.append(
        (_specvlm_name(rec), rec["mean_accepted_length"])
        + tuple(rec[k] for k in _SPEEDUPS)
        + (rec["specvlm_ttft_s"],)
    )
    return rows


_SPEEDUPS = (
    "decode_speedup",
    "e2e_speedup",
    "decode_speedup_vs_compiled",
    "e2e_speedup_vs_compiled",
)


def _specvlm_name(rec: dict) -> str:
    if not rec["speculated"]:
        return "SpecVLM (target alone)"
    if rec["policy"] == "auto":
        return f"SpecVLM auto (drop {rec['drop_rate']:g}, {rec['tree_size']} nodes)"
    return f"SpecVLM (drop {rec['drop_rate']:g}, {rec['tree_size']} nodes)"


def print_side_by_side(rec: dict) -> None:
    """Every path in one table: tau, decode and end-to-end speedups (per token) against the
    target's eager ``generate`` and against the compiled target, time to first token."""
    rows = _rows(rec)
    width = max(len(row[0]) for row in rows)
    compiled = rec["compiled_e2e_s"] is not None
    print(
        "side by side (speedups per token against the target alone"
        + ("; /c: against the compiled target):" if compiled else "):")
    )
    head = f"  {'':<{width}} {'tau':>5} {'decode':>7} {'e2e':>6}"
    if compiled:
        head += f" {'decode/c':>8} {'e2e/c':>6}"
    print(head + f" {'first token':>12}")
    for name, tau, dec, e2e, dec_c, e2e_c, ttft in rows:
        line = f"  {name:<{width}} {'-' if tau is None else f'{tau:.2f}':>5}"
        line += f" {_times(dec):>7} {_times(e2e):>6}"
        if compiled:
            line += f" {_times(dec_c):>8} {_times(e2e_c):>6}"
        print(line + f" {1000 * ttft:>9.0f} ms")
    if compiled:
        print(
            f"(target compiled: generate with a static cache and torch.compile; its warm-up "
            f"and compile took {rec['compile_s']:.1f} s, untimed, in none of these times)"
        )
