"""Overlapped drafting (:mod:`specvlm.overlap`) projected for H100s on the roofline of
:mod:`specvlm.tools.perf_model` (``python -m specvlm.tools.overlap_projection`` prints the
tables of ``docs/performance.md``, "Overlapped drafting").

The schedule as built, per step, with the draft on GPUs of its own:

* the target verifies the tree (``V``: one forward of the root and every node);
* meanwhile the draft feeds the guessed path's last node and drafts the next tree from its
  top-1 token (``L``: one forward more than a step's drafting ``D``);
* the step ends when both are done (``max(V, L)``); when the guess missed (probability
  ``1 - h``), the draft then drafts the next tree as the sequential loop would (``D``).

So a step costs ``max(V, L) + (1 - h) * D`` against the sequential ``V + D``. The guess is the
tree's rank-0 chain accepted whole and the target's bonus being the draft's top-1 after it: with
the rank acceptances of the policy's model at the scenario's tau
(:func:`~specvlm.tools.perf_model.rates_for_tau`), ``h = a0 ** (depth + 1)``. The ceiling
(every guess right, ``h = 1``) is ``max(V, L)`` per step: how far any look-ahead of one tree can
go. Decode only (the prefill overlap, the draft's vision tower during the target's prefill, is
not in the roofline).
"""

from __future__ import annotations

from dataclasses import dataclass

from specvlm.tools.perf_model import (
    H100,
    MIXES,
    PAIRS,
    Gpu,
    Scenario,
    decode_seconds,
    drafting_seconds,
    rates_for_tau,
    with_mix,
)
from specvlm.trees import tree_of_size

# Published decode speedups of the lossless, training-free video pairs (A100s / their setups).
PUBLISHED = {
    ("llava-ov-72b", "llava-ov-7b"): "SpecVLM 2.68x, ParallelVLM 3.36x, HIPPO up to 3.51x",
    ("qwen2.5-vl-32b", "qwen2.5-vl-7b"): "SpecVLM 2.11x, ParallelVLM 2.42x",
}
# Issue 26's goals: (target, draft, target GPUs, draft GPUs, decode speedup), tau 3.9, captured.
GOALS = (("llava-ov-72b", "llava-ov-7b", 4, 1, 3.6), ("qwen2.5-vl-32b", "qwen2.5-vl-7b", 2, 1, 2.6))
CAPTURED_MIX = MIXES[2]  # both captured: the regime the goals are stated in


@dataclass(frozen=True)
class OverlapProjection:
    ar_token_s: float  # the target alone, per token
    verify_s: float  # V
    drafting_s: float  # D: a sequential step's drafting
    lookahead_s: float  # L: the worker's drafting on a guess
    hit_rate: float  # h
    tokens_per_step: float  # tau

    def _decode(self, step_s: float) -> float:
        return self.ar_token_s / (step_s / self.tokens_per_step)

    @property
    def sequential_speedup(self) -> float:
        return self._decode(self.verify_s + self.drafting_s)

    @property
    def overlapped_speedup(self) -> float:
        return self._decode(self.overlapped_step_s(self.hit_rate))

    @property
    def gated_speedup(self) -> float:
        """``overlap="auto"``: the gate looks ahead only where it pays
        (:mod:`specvlm.lookahead_gate`), so never below the sequential loop."""
        return max(self.sequential_speedup, self.overlapped_speedup)

    @property
    def ceiling_speedup(self) -> float:
        return self._decode(self.overlapped_step_s(1.0))

    def overlapped_step_s(self, hit_rate: float) -> float:
        return max(self.verify_s, self.lookahead_s) + (1.0 - hit_rate) * self.drafting_s

    def hit_rate_for(self, speedup: float) -> float | None:
        """The hit rate that reaches ``speedup`` (None: not even every guess right does)."""
        step = self.ar_token_s * self.tokens_per_step / speedup
        base = max(self.verify_s, self.lookahead_s)
        if step < base:
            return None
        return max(0.0, 1.0 - (step - base) / self.drafting_s)


def project_overlap(s: Scenario, gpu: Gpu = H100) -> OverlapProjection:
    """Sequential and overlapped SpecVLM decode for ``s`` (its tree, tau and regimes)."""
    target, draft = s.sides(gpu)
    tree = tree_of_size(s.tree_nodes, s.tree_depth)
    prompt = s.text_tokens + s.video_tokens
    mid = s.new_tokens // 2  # caches at mid-generation stand for the average step
    ctx_t, ctx_d = prompt + mid, s.text_tokens + int(s.video_tokens * (1.0 - s.drop_rate)) + mid
    drafting = drafting_seconds(draft, tree, ctx_d)
    rank0 = rates_for_tau(s.tau, tree)[0]
    return OverlapProjection(
        ar_token_s=decode_seconds(target, s.new_tokens - 1, prompt) / (s.new_tokens - 1),
        verify_s=target.forward(tree.size + 1, ctx_t),
        drafting_s=drafting,
        lookahead_s=draft.forward(1, ctx_d) + drafting,
        hit_rate=rank0 ** (tree.depth + 1),
        tokens_per_step=s.tau,
    )


def outcome_coverage(tree, rates: tuple[float, ...], guesses: int) -> float:
    """The probability that a step's outcome (the accepted path's last node, the bonus token's
    draft rank) is one of the ``guesses`` most likely ones, under the rank model: at each node
    the target takes the draft's rank-``r`` token with probability ``rates[r]``, descending
    where that child is in the tree, else ending there with it as the bonus. What a look-ahead
    drafting the next tree for that many guesses at once could hit."""
    children: dict[int, set[int]] = {-1: set()}
    reach = {-1: 1.0}
    for i, parent in enumerate(tree.parents):
        rank = tree.paths[i][-1]
        children.setdefault(parent, set()).add(rank)
        children.setdefault(i, set())
        reach[i] = reach[parent] * rates[rank]
    outcomes = sorted(
        (reach[node] * rate for node, ranks in children.items()
         for r, rate in enumerate(rates) if r not in ranks),
        reverse=True,
    )  # fmt: skip
    return sum(outcomes[:guesses])


def table(gpu: Gpu = H100, video=(16384,), tau: float = 3.9, mix: tuple = CAPTURED_MIX) -> str:
    """Sequential and overlapped decode speedups over the target alone, layer split and tensor
    parallel, beside the published numbers."""
    lines = [
        "| target / draft (GPUs) | target split | video tokens | sequential | look-ahead every "
        "step (hit rate) | gated (`auto`) | every guess right | published |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target, draft, tg, dg, _ in PAIRS:
        for tp in (False, True):
            for n in video:
                sc = with_mix(Scenario(target, draft, tg, dg, n, tau=tau, tensor_parallel=tp), mix)
                p = project_overlap(sc, gpu)
                lines.append(
                    f"| {target} / {draft} ({tg}+{dg}) | {'tensor parallel' if tp else 'layers'} "
                    f"| {n} | {p.sequential_speedup:.2f}x | {p.overlapped_speedup:.2f}x "
                    f"({p.hit_rate:.0%}) | {p.gated_speedup:.2f}x | {p.ceiling_speedup:.2f}x "
                    f"| {PUBLISHED.get((target, draft), '-')} |"
                )
    return "\n".join(lines)


def goal_lines(gpu: Gpu = H100, video: int = 16384, tau: float = 3.9) -> list[str]:
    """Each goal (layer-split target, both captured): met or missed, and the hit rate it
    would take."""
    lines = []
    for target, draft, tg, dg, goal in GOALS:
        sc = with_mix(Scenario(target, draft, tg, dg, video, tau=tau), CAPTURED_MIX)
        p = project_overlap(sc, gpu)
        need = p.hit_rate_for(goal)
        needed = "out of reach of any look-ahead" if need is None else f"needs {need:.0%}"
        lines.append(
            f"* {target} / {draft}: {p.gated_speedup:.2f}x (sequential "
            f"{p.sequential_speedup:.2f}x, hit rate {p.hit_rate:.0%}) against >= {goal}x: "
            f"{'met' if p.gated_speedup >= goal else 'missed'}; the goal {needed} "
            f"(ceiling {p.ceiling_speedup:.2f}x)"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="overlapped drafting projected on H100s")
    parser.add_argument("--tau", type=float, default=3.9)
    args = parser.parse_args(argv)
    print(f"Overlapped drafting, tau {args.tau}, both captured, H100s\n")
    print(table(tau=args.tau, video=(4096, 16384, 65536)))
    print("\ngoals (issue 26, 16k video tokens, layer split)\n")
    print("\n".join(goal_lines(tau=args.tau)))
    tree = tree_of_size(48, 6)
    rates = rates_for_tau(args.tau, tree)
    print(
        f"\nrank-0 acceptance at tau {args.tau}: {rates[0]:.3f}; outcomes covered by the "
        "most likely guesses (default tree):"
    )
    print(", ".join(f"{m}: {outcome_coverage(tree, rates, m):.0%}" for m in (1, 4, 16, 64, 256)))


if __name__ == "__main__":
    main()


__all__ = ["OverlapProjection", "goal_lines", "project_overlap", "table"]
