"""The automatic policy (``accelerate(..., policy="auto")``, the default): for each ``generate``
call, whether to speculate at all, at which drop rate, with which draft tree.

It predicts the time of a call for every candidate and takes the fastest:

* **Plain decoding**: one target forward per new token.
* **Speculation** at drop rate ``d`` with tree ``T``: the draft's prefill of the kept tokens
  (its decoder's, measured; its encoding of the whole video, as seen in earlier calls), the
  target's scoring of the video when ``d > 0`` (as seen), then per step the draft's forwards
  (the pending chain, then one per tree level below the deepest) and the target's verification
  of ``|T| + 1`` tokens; a step emits ``tau(T)`` tokens on average. The target's prefill is the
  same for both and left out.

Forward costs are measured on the user's hardware (:mod:`specvlm.calibration`), once per pair,
device, dtype and context length (powers of two), and cached here. Acceptance is learned from
the calls so far: at every node the target's walk reaches, which draft ranks were offered as
children and which one the target took (``GenerationStats.rank_offers`` / ``rank_hits``, and
the same per depth), kept per drop rate, forgotten geometrically, starting from a prior.
Acceptance is modelled per depth and rank: ``p[d][r]``, the overall rates by rank where a depth
has few counts of its own (:meth:`RankAcceptance.rates`). A node's chance of being accepted is
the product along its path of each level's rate of its rank, ``tau`` is one plus their sum, and
the best tree of ``n`` nodes is the ``n`` paths of largest chance (:func:`ranked_paths`; with the
same rates at every depth, :func:`specvlm.trees.build_tree`'s; here every size up to 64 and depth
up to 8 is weighed; dynamic trees where asked, below). A drop
rate that was never tried starts from the acceptance of the full video
(an optimistic guess: pruning rarely helps the draft) and is tried only when that guess makes it
clearly faster; what it then does decides whether it stays. How many tokens a call decodes is
the running mean of the calls so far (``max_new_tokens`` at first, never more); how the loops'
own overheads and a busy machine stretch the measured costs is the ratio of observed to
predicted decode times (median of the last calls, per method).

Partial auto: an :class:`AutoPolicy` can pin the drop rate (``drop_rates=(0.9,)``), the tree
(``tree=``) or speculation itself (``speculate=True``: no plain decoding, no fall-back) and
choose the rest; a pinned tree is predicted by the same formulas as every candidate tree.

Dynamic trees: ``AutoPolicy(dynamic_budgets=(16, 32))`` also weighs ``tree="dynamic"`` (the
EAGLE-2 tree, :mod:`specvlm.dynamic_tree`) at those verification budgets. Its tau is predicted as
the best static tree's of the same budget and depth limit times a gain: :data:`DYNAMIC_GAIN` (the
low end of what EAGLE-2 reports, and of what this CPU measured) until dynamic calls were seen,
then the median ratio of their tau to that prediction, made with the acceptance known when it
is used (a first call's prediction rests on the prior); a step costs the pending chain's forward,
``width`` candidates per level below the first, and the verification of ``budget + 1`` tokens;
its observed-to-predicted decode times are kept apart from the static trees'. A dynamic call is
captured where a static one would be (its forwards in width buckets, :mod:`specvlm.capture`) and
is not overlapped (``docs/performance.md``: on this CPU it lost to static trees).

Selectors: ``AutoPolicy(selectors=("two_stage", "semantic"))`` chooses the pruning selector
too. Acceptance is then kept per drop rate and selector. At a drop rate where one selector has
run, a selector that is due is predicted as the best one seen there and taken on that tie: one
with fewer than :data:`SELECTOR_TRIALS` calls (they take turns), or one not run in the last
:data:`SELECTOR_PROBE_EVERY` calls at that drop rate. Otherwise the one whose acceptance
predicts the faster call wins. A call's acceptance is noisy (a few steps), so one trial decides
badly (``docs/performance.md``). The selectors cost
the same (the feature selectors read the draft's decoder inputs, which its prefill computes
anyway), so acceptance alone decides (``docs/performance.md``, "Selector study").

While a call speculates, the policy checks after every step whether the acceptance seen so far
still pays for the drafting; if not, the call goes on with plain decoding (``fallback_step``).
After calls that fell back to plain decoding for lack of acceptance, speculation is tried again
every :data:`PROBE_EVERY` calls. The output is never affected: every path is lossless.
"""

from __future__ import annotations

import functools
import heapq
import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache

from specvlm import calibration, names
from specvlm.calibration import ForwardCosts, Probe, context_bucket
from specvlm.dynamic_tree import DynamicTree
from specvlm.selectors import keep_count
from specvlm.stats import GenerationStats
from specvlm.trees import Tree, default_tree

DROP_RATES = (0.0, 0.5, 0.75, 0.9)
TREE_SIZES = frozenset((1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64))
MAX_DEPTH = 8
MAX_RANKS = 8
# Before anything is observed: acceptance by draft rank of a same-family draft (the default
# tree's assumption), worth PRIOR_WEIGHT offers of each rank.
PRIOR = (0.72, 0.12, 0.05, 0.03, 0.02, 0.015, 0.01, 0.008)
PRIOR_WEIGHT = 1.0
DEPTH_PRIOR_WEIGHT = 4.0  # offers a depth's own counts need to outweigh the rates over all depths
MEMORY = 0.8  # weight of the counts so far when a call's counts are added
EXPLORE_GAIN = 0.10  # an untried drop rate must look this much faster to be tried
SELECTOR_TRIALS = 3  # calls of each candidate selector at a drop rate before choosing by acceptance
SELECTOR_PROBE_EVERY = 8  # ... and after that, a selector not run in this many calls runs again
DYNAMIC_GAIN = 1.1  # a dynamic tree's tau over the static tree's of its budget, before any is seen
FALLBACK_MARGIN = 1.05  # speculation stops when a token costs this much more than plain decoding
MIN_STEPS = 3  # steps of a call before the policy may stop speculating
PROBE_EVERY = 8
FACTOR_SAMPLES = 5  # observed / predicted decode times: the median of the last few
_MIN_RATE, _MAX_RATE = 1e-3, 0.999


@dataclass
class RankAcceptance:
    """Decayed counts, per draft rank, of children offered and taken at the nodes the target
    reached: over all depths, and per depth of the children (``depth_offers[0]``: the root's
    children)."""

    offers: list[float] = field(default_factory=list)
    hits: list[float] = field(default_factory=list)
    depth_offers: list[list[float]] = field(default_factory=list)
    depth_hits: list[list[float]] = field(default_factory=list)

    @property
    def observed(self) -> bool:
        return sum(self.offers) > 0

    def add(self, offers: list[int], hits: list[int], memory: float = MEMORY) -> None:
        """A call's counts over all depths (the older ones weighted by ``memory``)."""
        self.offers, self.hits = _decayed_sum((self.offers, self.hits), (offers, hits), memory)

    def add_call(self, stats: GenerationStats, memory: float = MEMORY) -> None:
        """A call's counts, over all depths and per depth."""
        self.add(stats.rank_offers, stats.rank_hits, memory)
        depths = max(len(self.depth_offers), len(stats.depth_rank_offers))
        for store in (self.depth_offers, self.depth_hits):
            store.extend([] for _ in range(depths - len(store)))
        for d in range(depths):
            theirs = (_count_row(stats.depth_rank_offers, d), _count_row(stats.depth_rank_hits, d))
            mine = (self.depth_offers[d], self.depth_hits[d])
            self.depth_offers[d], self.depth_hits[d] = _decayed_sum(mine, theirs, memory)

    def rates(
        self, prior, ranks: int, depth_weight: float = DEPTH_PRIOR_WEIGHT
    ) -> tuple[tuple[float, ...], ...]:
        """Rates per depth, then rank (a table: :func:`rate_table`). At each depth the counts
        over all depths are shrunk towards that depth's ``prior`` row (worth
        :data:`PRIOR_WEIGHT` offers of each rank), then that depth's own counts towards the
        result (worth ``depth_weight`` offers): a depth seldom reached keeps the overall
        rates. Rows past the last that differs are dropped (the last row serves the deeper
        levels)."""
        prior = rate_table(prior)
        depths = max(len(prior), len(self.depth_offers) + 1)
        table = []
        for d in range(depths):
            overall = _shrunk(self.offers, self.hits, _table_row(prior, d), ranks)
            offers, hits = _count_row(self.depth_offers, d), _count_row(self.depth_hits, d)
            table.append(_shrunk(offers, hits, overall, ranks, depth_weight))
        while len(table) > 1 and table[-1] == table[-2]:
            table.pop()
        return tuple(table)

    def plus(self, stats: GenerationStats) -> RankAcceptance:
        """These counts with a running call's own added (not decayed)."""
        merged = RankAcceptance(
            list(self.offers),
            list(self.hits),
            [list(r) for r in self.depth_offers],
            [list(r) for r in self.depth_hits],
        )
        merged.add_call(stats, memory=1.0)
        return merged


def _shrunk(
    offers, hits, prior: tuple[float, ...], ranks: int, weight: float = PRIOR_WEIGHT
) -> tuple[float, ...]:
    """Per rank, ``(hits + weight * prior) / (offers + weight)``; the target takes at most one
    child, so each rank is capped at what the lower ranks leave (``sum <= 1``); in
    ``[0.001, 0.999]``."""
    offers, hits = _padded(offers, ranks), _padded(hits, ranks)
    prior = tuple(prior) + (prior[-1],) * max(0, ranks - len(prior))
    rates, left = [], 1.0
    for o, h, p in zip(offers, hits, prior[:ranks], strict=True):
        rate = min((h + weight * p) / (o + weight), left)
        left -= rate
        rates.append(min(_MAX_RATE, max(_MIN_RATE, rate)))
    return tuple(rates)


def _decayed_sum(old: tuple[list, list], new: tuple[list, list], memory: float):
    """``memory * old + new``, per rank, for offers and hits alike (padded to one length)."""
    size = max(len(old[0]), len(new[0]))
    return tuple(
        [memory * a + b for a, b in zip(_padded(o, size), _padded(n, size), strict=True)]
        for o, n in zip(old, new, strict=True)
    )


def _count_row(rows: list[list], depth: int) -> list:
    """Row ``depth`` of per-depth counts (none past the deepest seen)."""
    return rows[depth] if depth < len(rows) else []


def _table_row(table: tuple[tuple[float, ...], ...], depth: int) -> tuple[float, ...]:
    """Row ``depth`` of a rate table (its last row serves deeper levels)."""
    return table[min(depth, len(table) - 1)]


def _padded(values: list, size: int) -> list:
    return list(values[:size]) + [0] * max(0, size - len(values))


def rate_table(rates) -> tuple[tuple[float, ...], ...]:
    """Acceptance rates as a table, per depth (row 0: depth 1), then rank; the last row serves
    the deeper levels. ``rates`` is a table, or one row of rates by rank for every depth."""
    rates = tuple(rates)
    if rates and isinstance(rates[0], (tuple, list)):
        return tuple(tuple(row) for row in rates)
    return (rates,)


@lru_cache(maxsize=256)
def ranked_paths(rates, limit: int = 200, max_depth: int = MAX_DEPTH):
    """The ``limit`` rank paths of largest value (product along the path of each level's rate
    of its rank, :func:`rate_table`), best first, as ``(path, value)``: the order
    :func:`specvlm.trees.build_tree` picks them in (with rates by rank alone), so its tree of
    ``n`` nodes at most ``d`` deep is the first ``n`` of these no longer than ``d``."""
    table = rate_table(rates)
    heap = [(-p, (r,)) for r, p in enumerate(table[0])]
    heapq.heapify(heap)
    out = []
    while heap and len(out) < limit:
        neg, path = heapq.heappop(heap)
        out.append((path, -neg))
        if len(path) < max_depth:
            for r, p in enumerate(_table_row(table, len(path))):
                heapq.heappush(heap, (neg * p, path + (r,)))
    return tuple(out)


def tree_tau(tree: Tree, rates) -> float:
    """Expected tokens per step of ``tree``: one plus each node's chance of being accepted (the
    product along its path of each level's rate of its rank, :func:`rate_table`)."""
    table = rate_table(rates)
    total = 1.0
    for path in tree.paths:
        value = 1.0
        for depth, rank in enumerate(path):
            row = _table_row(table, depth)
            value *= row[rank] if rank < len(row) else row[-1]
        total += value
    return total


@dataclass
class TreeChoice:
    """A tree and what it is predicted to do (:func:`best_tree`)."""

    seconds: float  # the decode, from the forward costs
    drop_rate: float
    tree: Tree | DynamicTree | None
    tau: float = 1.0
    step: float = 0.0  # raw seconds per speculative step
    untried: bool = False
    selector: str | None = None  # the policy's choice of selector (None: the call's own)
    due: str = ""  # why that selector runs whatever its acceptance ("": it is the best)


def best_tree(rates, target, draft, ctx_t: int, ctx_d: int, decode: float) -> TreeChoice:
    """The fastest static tree for acceptance ``rates`` (by depth and rank,
    :func:`rate_table`): of every size in :data:`TREE_SIZES` at every depth up to
    :data:`MAX_DEPTH`, the best tree of that size and depth (its paths of highest chance,
    :func:`ranked_paths`), weighed by the predicted seconds of ``decode`` tokens. ``target`` and
    ``draft`` give ``seconds(n, context)`` of a forward (:class:`ForwardCosts`); ``ctx_t`` /
    ``ctx_d`` are their caches' lengths."""
    ranked = ranked_paths(_rounded(rates))
    largest = max(TREE_SIZES)
    drafts = [draft.seconds(w, ctx_d) if w else 0.0 for w in range(largest + 1)]
    verifies = [target.seconds(n, ctx_t) for n in range(largest + 2)]
    best = None
    for depth in range(1, MAX_DEPTH + 1):
        paths = [(p, v) for p, v in ranked if len(p) <= depth][:largest]
        widths = [0] * (depth + 1)
        tau, levels = 1.0, 0
        for n, (path, value) in enumerate(paths, start=1):
            widths[len(path)] += 1
            tau += value
            levels = max(levels, len(path))
            if n not in TREE_SIZES:
                continue
            drafting = drafts[1] + sum(drafts[widths[i]] for i in range(1, levels))
            step = drafting + verifies[n + 1]
            seconds = max(1.0, decode / tau) * step
            if best is None or seconds < best.seconds:
                best = TreeChoice(seconds, 0.0, [q for q, _ in paths[:n]], tau, step)
    best.tree = Tree.from_paths(best.tree)
    return best


def dynamic_reference(limits: DynamicTree, rates) -> Tree:
    """The static tree a dynamic one is predicted against: the ``budget`` rank paths of largest
    value no deeper than ``depth`` (what :func:`best_tree` builds for that size and depth)."""
    ranked = ranked_paths(_rounded(rates), limit=max(200, limits.budget), max_depth=limits.depth)
    return Tree.from_paths([p for p, _ in ranked[: limits.budget]])


def dynamic_choice(limits: DynamicTree, rates, target, draft, ctx_t, ctx_d, decode, gain):
    """What a dynamic tree of these ``limits`` is predicted to do: tau, the reference static
    tree's (:func:`dynamic_reference`) times ``gain``; a step feeds the pending chain, then
    ``width`` candidates at each level below the deepest (at most ``top_k`` on the first), and
    the target verifies ``budget + 1`` tokens."""
    tau = max(1.0, tree_tau(dynamic_reference(limits, rates), rates) * gain)
    drafting = draft.seconds(1, ctx_d)
    for level in range(1, limits.depth):
        fed = min(limits.width, limits.top_k) if level == 1 else limits.width
        drafting += draft.seconds(fed, ctx_d)
    step = drafting + target.seconds(limits.budget + 1, ctx_t)
    return TreeChoice(max(1.0, decode / tau) * step, 0.0, limits, tau, step)


def tree_choice(tree: Tree, rates, target, draft, ctx_t: int, ctx_d: int, decode: float):
    """What ``tree`` is predicted to do, as :func:`best_tree` predicts each candidate: a
    drafting step feeds the pending chain (one token) and every level above the deepest, the
    verification feeds the root and every node."""
    drafting = draft.seconds(1, ctx_d) + sum(
        draft.seconds(len(tree.nodes_at_depth(d)), ctx_d) for d in range(1, tree.depth)
    )
    step = drafting + target.seconds(tree.size + 1, ctx_t)
    tau = tree_tau(tree, _rounded(rates))  # rounded as best_tree's
    return TreeChoice(max(1.0, decode / tau) * step, 0.0, tree, tau, step)


@dataclass(frozen=True)
class Choice:
    """What the policy chose for one call, and the predictions it was chosen on."""

    speculate: bool
    drop_rate: float
    tree: Tree | DynamicTree | None
    predicted_speedup: float | None  # predicted decode time of plain decoding / this choice's
    reason: str
    step_seconds: float = 0.0  # predicted seconds of one speculative step (corrected)
    token_seconds: float = 0.0  # predicted seconds of one plain decoding step (corrected)
    raw_step_seconds: float = 0.0  # the same from the measured forward costs alone
    raw_token_seconds: float = 0.0
    draft_prefill_seconds: float = 0.0  # the draft decoder's prefill (measured forward costs)
    video_tokens: int = 0
    selector: str | None = None  # the selector chosen (None: the call's own)

    @property
    def dynamic(self) -> bool:
        return isinstance(self.tree, DynamicTree)

    @property
    def score_video(self) -> bool:
        """Whether the target scores the video: where it is pruned, by a selector that reads
        the scores (a feature selector does not)."""
        return self.speculate and self.drop_rate > 0 and not _reads_features(self.selector)


@dataclass(frozen=True)
class _CallShape:
    """What a call is predicted to be: tokens to decode after the first, its video tokens, the
    draft's prompt length per drop rate, and both caches' lengths at mid-generation."""

    decode: float
    video_tokens: int
    prompts: dict  # drop rate -> the draft's prompt length
    ctx_t: int
    ctx_d: dict  # drop rate -> the draft's cache length


def _locked(method):
    """The method runs holding the policy's lock (threads share one policy)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class AutoPolicy:
    """Chooses each call's settings; holds what it has measured and observed (per pair: one
    policy per :class:`~specvlm.speculative_decoder.SpeculativeDecoder`). Safe to share between
    threads: choosing (with its calibration), the per-step check and learning from a call each
    hold the policy's lock, so calls in several threads learn from each other's statistics one
    at a time.

    ``costs``: measured forward costs, ``{(role, device, dtype): ForwardCosts}``; filled on
    demand, or given (tests, or costs measured elsewhere). ``drop_rates``: the candidates.
    ``learn_timing``: correct the forward costs by how long decoding is seen to take (the
    loops' own overheads, a busy machine); off where the costs given are not this machine's.

    Partial auto, one setting pinned while the others are chosen: ``drop_rates=(0.9,)`` pins
    the drop rate; ``tree=`` (a :class:`~specvlm.trees.Tree` or a list of rank paths) pins the
    draft tree; ``speculate=True`` always speculates (with the drop rate and tree chosen).
    ``selectors``: built-in selector names to choose among (default: none; the call's own).
    ``dynamic_budgets``: verification budgets at which ``tree="dynamic"`` is weighed too
    (default: none); dynamic candidates keep :class:`~specvlm.dynamic_tree.DynamicTree`'s
    other limits.
    """

    def __init__(
        self,
        drop_rates=DROP_RATES,
        costs: dict | None = None,
        learn_timing=True,
        *,
        tree=None,
        speculate: bool | None = None,
        selectors=None,
        dynamic_budgets=(),
    ):
        self.drop_rates = tuple(drop_rates)
        if not self.drop_rates or not all(
            isinstance(d, (int, float)) and not isinstance(d, bool) and 0.0 <= d < 1.0
            for d in self.drop_rates
        ):
            raise ValueError(f"drop_rates must be values in [0, 1), got {drop_rates!r}")
        if tree is not None and not isinstance(tree, (Tree, list, tuple)):
            raise ValueError(
                f"AutoPolicy(tree=) pins a static tree (a Tree or rank paths), got {tree!r}; "
                'for dynamic trees give accelerate(tree="dynamic") or AutoPolicy(dynamic_budgets=)'
            )
        if speculate not in (None, True):
            raise ValueError(
                "AutoPolicy(speculate=) pins speculation on (True) or leaves it to the policy "
                f"(None), got {speculate!r}; for plain decoding use accelerate(speculate=False)"
            )
        self.selectors = _checked_selectors(selectors)
        self.dynamic_budgets = _checked_budgets(dynamic_budgets, tree)
        self.tree = None if tree is None or isinstance(tree, Tree) else Tree.from_paths(tree)
        self.speculate = speculate
        self.learn_timing = learn_timing
        self._lock = threading.Lock()  # the policy's state
        self._calibrating = threading.Lock()  # one calibration at a time
        self.costs: dict[tuple[str, str, str], ForwardCosts] = dict(costs or {})
        # by drop rate; by (drop rate, selector) where the policy chooses selectors (d > 0)
        self.acceptance: dict[float | tuple[float, str], RankAcceptance] = {}
        self._selector_calls: dict[tuple[float, str], int] = {}  # calls observed
        self._selector_last: dict[tuple[float, str], int] = {}  # the drop rate's call count then
        self._calls_at: dict[float, int] = {}  # calls observed per drop rate (choosing selectors)
        self.expected_new_tokens: float | None = None
        self.scoring_seconds = 0.0
        # the draft's prefill beyond its decoder's (its multimodal wrapper and vision tower run
        # on the whole video whatever is pruned), per video token, as seen in the last calls
        self._draft_video_seconds: list[float] = []
        self.plain_calls = 0  # calls since speculation was last tried
        self._spec_factors: list[float] = []
        self._dynamic_factors: list[float] = []  # the same, of calls with dynamic trees
        # the last dynamic calls: (tau seen, the tree's limits); their gain over the reference
        # static tree is taken at the rates known when it is used, not those of their choice
        self._dynamic_seen: list[tuple[float, DynamicTree]] = []
        self._plain_factors: list[float] = []

    # ---------------------------------------------------------------------------------------
    # Costs
    # ---------------------------------------------------------------------------------------
    @staticmethod
    def _key(role: str, family, model, runner=None) -> tuple[str, str, str]:
        """Costs are kept per role, device and dtype; a captured model's per runner capacity
        (its forwards attend over the whole static cache)."""
        weight = family.lm_head(model).weight
        if runner is not None:
            role = f"{role}:captured:{runner.capacity}"
        return role, str(next(family.decoder(model).parameters()).device), str(weight.dtype)

    def calibrate(
        self, family, target, draft, target_contexts, draft_contexts, runners=None
    ) -> float:
        """Measure the buckets of these contexts not measured yet; returns the seconds spent.
        One calibration at a time (a second caller waits, then finds its buckets measured);
        the rest of the policy (other calls' choices, per-step checks, learning) goes on
        meanwhile."""
        with self._calibrating:
            with self._lock:
                probes = self._missing(
                    family, target, draft, target_contexts, draft_contexts, runners or {}
                )
            if not probes:
                return 0.0
            t0 = time.perf_counter()
            measured = calibration.measure(family, probes)
            with self._lock:
                for probe in probes:
                    key = self._key(probe.role, family, probe.model, probe.runner)
                    costs = self.costs[key]
                    for bucket in probe.buckets:
                        prefill, row = measured[(probe.role, bucket)]
                        costs.forward[bucket], costs.prefill[bucket] = row, prefill
            return time.perf_counter() - t0

    def _missing(
        self, family, target, draft, target_contexts, draft_contexts, runners: dict
    ) -> list[Probe]:
        """What is not measured yet, for each model (on its runner where captured)."""
        probes = []
        for role, model, contexts, widths in (
            ("target", target, target_contexts, calibration.TARGET_WIDTHS),
            ("draft", draft, draft_contexts, calibration.DRAFT_WIDTHS),
        ):
            runner = runners.get(role)
            key = self._key(role, family, model, runner)
            costs = self.costs.setdefault(key, ForwardCosts(bucketed=runner is not None))
            missing = sorted({context_bucket(c) for c in contexts} - set(costs.forward))
            if missing:
                probes.append(Probe(role, model, tuple(missing), widths, runner))
        return probes

    # ---------------------------------------------------------------------------------------
    # Choosing
    # ---------------------------------------------------------------------------------------
    def choose(
        self,
        family,
        target,
        draft,
        *,
        prompt_len: int,
        video_tokens: int,
        max_new_tokens: int,
        max_rank: int,
        speculate: bool | None = None,
        draft_runner=None,
        target_runner=None,
    ) -> tuple[Choice, float]:
        """The settings of the next call, and the seconds spent calibrating for it.
        ``draft_runner`` / ``target_runner``: the call's captured steps of each model
        (:mod:`specvlm.capture`), whose forwards are the costs to choose by; None: eager."""
        with self._lock:
            shape = self._shape(prompt_len, video_tokens, max_new_tokens)
        contexts = list(shape.ctx_d.values())
        runners = {"draft": draft_runner, "target": target_runner}
        spent = self.calibrate(family, target, draft, [shape.ctx_t], contexts, runners)
        with self._lock:
            tgt = self.costs[self._key("target", family, target, target_runner)]
            drf = self.costs[self._key("draft", family, draft, draft_runner)]
            ranks = max(1, min(MAX_RANKS, max_rank + 1))
            speculate = self.speculate if speculate is None else speculate
            return self._choose(shape, tgt, drf, ranks, max_new_tokens, speculate), spent

    def _shape(self, prompt_len: int, video_tokens: int, max_new_tokens: int) -> _CallShape:
        new = self.expected_new_tokens or max_new_tokens
        new = max(1.0, min(float(new), float(max_new_tokens)))
        decode = max(new - 1.0, 1.0)  # tokens after the first (the prefill gives the first)
        drops = self.drop_rates if video_tokens else (0.0,)
        text = prompt_len - video_tokens
        prompts = {d: text + keep_count(video_tokens, d) for d in drops}  # the draft's
        ctx_t = int(prompt_len + decode / 2)  # caches at mid-generation
        ctx_d = {d: int(p + decode / 2) for d, p in prompts.items()}
        return _CallShape(decode, video_tokens, prompts, ctx_t, ctx_d)

    def _choose(self, shape, tgt, drf, ranks, max_new_tokens, speculate) -> Choice:
        raw_token = tgt.seconds(1, shape.ctx_t)
        token = raw_token * self._factor(self._plain_factors)
        plain = shape.decode * token
        if speculate is False or max_new_tokens <= 1:
            why = "plain decoding requested" if speculate is False else "one new token"
            return Choice(False, 0.0, None, 1.0, why, 0.0, token, 0.0, raw_token)
        best, best_total, spec_factor = self._best_speculation(shape, tgt, drf, ranks)
        chosen = Choice(
            True,
            best.drop_rate,
            best.tree,
            plain / (best.seconds * spec_factor),
            "",
            best.step * spec_factor,
            token,
            best.step,
            raw_token,
            drf.prefill_seconds(shape.prompts[best.drop_rate]),
            shape.video_tokens,
            best.selector,
        )
        trying = ""
        if best.untried:
            trying = f" (drop rate {best.drop_rate:g} untried: trying it)"
        elif best.due:
            trying = f" (selector {best.selector}: {best.due})"
        if speculate is True:
            return replace(chosen, reason="speculation requested" + trying)
        if best_total < plain:
            self.plain_calls = 0
            why = f"predicted {plain / best_total:.2f}x faster than plain decoding"
            return replace(chosen, reason=why + trying)

        # Plain decoding is predicted faster. When the measured forward costs alone would let
        # speculation pay with the prior's acceptance, it is the acceptance (or the overheads)
        # seen so far that does not: speculation is tried again now and then.
        least = min(shape.prompts)  # the smallest candidate drop rate (0 unless pinned away)
        hopeful = self._tree(PRIOR[:ranks], tgt, drf, shape.ctx_t, shape.ctx_d[least], shape.decode)
        hopeful = (
            hopeful.seconds + drf.prefill_seconds(shape.prompts[least]) < shape.decode * raw_token
        )
        self.plain_calls += 1
        if hopeful and self.plain_calls >= PROBE_EVERY:
            self.plain_calls = 0
            return replace(chosen, reason="probing: speculation has not paid lately")
        why = (
            "the acceptance seen so far does not pay for drafting"
            if hopeful
            else "the draft is too slow next to the target for speculation to pay"
        )
        return Choice(False, 0.0, None, 1.0, why, 0.0, token, 0.0, raw_token)

    def _best_speculation(self, shape, tgt, drf, ranks):
        """The fastest speculation: every drop rate (and selector), its best tree (and the
        dynamic candidates); the prompt work it adds (the draft's prefill, its video encoding,
        the scoring the pruning needs) counts too. Returns it, its predicted total seconds and
        its decode-time correction factor."""
        factors = {False: self._factor(self._spec_factors)}
        factors[True] = self._factor(self._dynamic_factors or self._spec_factors)
        encoding = self.draft_video_seconds * shape.video_tokens
        best = None
        for d, selector, due in self._candidates(shape.prompts):
            rates, untried = self._rates(d, ranks, selector, due)
            prompt = drf.prefill_seconds(shape.prompts[d]) + encoding
            prompt += self.scoring_seconds if d > 0 and not _reads_features(selector) else 0.0
            for p in self._trees(rates, tgt, drf, shape.ctx_t, shape.ctx_d[d], shape.decode):
                p.drop_rate, p.untried, p.selector, p.due = d, untried, selector, due
                factor = factors[isinstance(p.tree, DynamicTree)]
                total = p.seconds * factor + prompt
                margin = 1.0 - EXPLORE_GAIN if untried else 1.0
                if best is None or total < best[1] * margin:
                    best = (p, total, factor)
        return best

    @property
    def dynamic_trees(self) -> tuple[DynamicTree, ...]:
        """The dynamic candidates: one per budget of ``dynamic_budgets``, the other limits
        :class:`~specvlm.dynamic_tree.DynamicTree`'s defaults."""
        return tuple(DynamicTree(budget=budget) for budget in self.dynamic_budgets)

    def _trees(self, rates, tgt, drf, ctx_t: int, ctx_d: int, decode: float):
        """The candidate trees at these rates: the best static one (or the pinned one), then a
        dynamic one per budget of ``dynamic_budgets``."""
        yield self._tree(rates, tgt, drf, ctx_t, ctx_d, decode)
        gain = self._gain(rates)
        for limits in self.dynamic_trees:
            yield dynamic_choice(limits, rates, tgt, drf, ctx_t, ctx_d, decode, gain)

    def _tree(self, rates, tgt, drf, ctx_t: int, ctx_d: int, decode: float) -> TreeChoice:
        """The best tree for these rates, or the pinned one with its prediction."""
        if self.tree is None:
            return best_tree(rates, tgt, drf, ctx_t, ctx_d, decode)
        return tree_choice(self.tree, rates, tgt, drf, ctx_t, ctx_d, decode)

    def _candidates(self, drop_rates) -> list[tuple[float, str | None, str]]:
        """(drop rate, selector, why it is due or "") to weigh, in order (the first of equals
        wins): per drop rate > 0 where the policy chooses selectors and one has run, the due
        ones first (fewest calls, then longest unused), then the others."""
        out = []
        for d in drop_rates:
            if d == 0.0 or self.selectors is None:
                out.append((d, None, ""))
                continue
            if not any(self._seen(d, s) is not None for s in self.selectors):
                out += [(d, s, "") for s in self.selectors]  # the drop rate itself is untried
                continue
            due = {s: self._due(d, s) for s in self.selectors}
            order = sorted(
                self.selectors,
                key=lambda s: (
                    not due[s],
                    self._selector_calls.get((d, s), 0),
                    self._selector_last.get((d, s), -1),
                ),
            )
            out += [(d, s, due[s]) for s in order]
        return out

    def _due(self, drop_rate: float, selector: str) -> str:
        """Why ``selector`` runs next at ``drop_rate`` whatever its acceptance ("": it is not
        due): a trial, or a probe after a while unused."""
        calls = self._selector_calls.get((drop_rate, selector), 0)
        if calls < SELECTOR_TRIALS:
            return f"trial {calls + 1} of {SELECTOR_TRIALS}"
        last = self._selector_last.get((drop_rate, selector), 0)
        if self._calls_at.get(drop_rate, 0) - last >= SELECTOR_PROBE_EVERY:
            return "probing"
        return ""

    def _seen(self, drop_rate: float, selector: str | None) -> RankAcceptance | None:
        """What was observed at this drop rate (with this selector, where the policy chooses
        them); None where nothing was."""
        key = drop_rate if selector is None or drop_rate == 0.0 else (drop_rate, selector)
        seen = self.acceptance.get(key)
        return seen if seen is not None and seen.observed else None

    def _rates(
        self, drop_rate: float, ranks: int, selector: str | None = None, due: str = ""
    ) -> tuple[tuple[tuple[float, ...], ...], bool]:
        """Acceptance rates by depth and rank at ``drop_rate`` (with ``selector``), and whether
        that rate is untried (then: the full video's, or the prior). A ``due`` selector: the best
        selector's rates there (not untried: it is taken on that tie)."""
        base = self.acceptance.get(0.0, RankAcceptance()).rates(PRIOR, ranks)
        prior = PRIOR if drop_rate == 0.0 else base
        seen = self._seen(drop_rate, selector)
        if seen is not None and not due:
            return seen.rates(prior, ranks), False
        others = [self._seen(drop_rate, s) for s in self.selectors or ()]
        others = [o.rates(prior, ranks) for o in others if o is not None]
        if selector is not None and others:
            reference = self.tree or default_tree()
            return max(others, key=lambda rates: tree_tau(reference, rates)), False
        return base, drop_rate != 0.0

    @property
    def draft_video_seconds(self) -> float:
        """Seconds per video token of the draft's prefill beyond its decoder (median of the
        last calls; 0 before any)."""
        return statistics.median(self._draft_video_seconds) if self._draft_video_seconds else 0.0

    @staticmethod
    def _factor(samples: list[float]) -> float:
        return statistics.median(samples) if samples else 1.0

    # ---------------------------------------------------------------------------------------
    # During and after a call
    # ---------------------------------------------------------------------------------------
    @_locked
    def keep_speculating(self, choice: Choice, stats: GenerationStats) -> bool:
        """After a speculative step: whether the acceptance seen so far still pays (always,
        where speculation is pinned on)."""
        if self.speculate or len(stats.accepted_lengths) < MIN_STEPS:
            return True
        if choice.dynamic:  # its own tokens per step so far (its ranks are not a static tree's)
            tau = sum(stats.accepted_lengths) / len(stats.accepted_lengths)
        else:
            seen = self._seen(choice.drop_rate, choice.selector) or RankAcceptance()
            tau = tree_tau(choice.tree, seen.plus(stats).rates(PRIOR, choice.tree.max_rank() + 1))
        per_token = choice.step_seconds / tau
        return per_token <= choice.token_seconds * FALLBACK_MARGIN

    def _gain(self, rates) -> float:
        """A dynamic tree's tau over its reference static tree's at these rates: the median of
        the last dynamic calls' (each in [0.5, 3]), or the prior before any."""
        if not self._dynamic_seen:
            return DYNAMIC_GAIN
        ratios = [
            _clamped(tau / tree_tau(dynamic_reference(limits, rates), rates))
            for tau, limits in self._dynamic_seen
        ]
        return statistics.median(ratios)

    @_locked
    def observe(self, choice: Choice, stats: GenerationStats) -> None:
        """Learn from a finished call: acceptance by rank, tokens per call, how the measured
        forward costs compare with the decode times, the scoring time."""
        if choice.dynamic and stats.accepted_lengths:
            self._dynamic_seen.append((stats.mean_accepted_length, choice.tree))
            del self._dynamic_seen[:-FACTOR_SAMPLES]
        key = choice.drop_rate
        if choice.selector is not None and stats.selector == choice.selector:  # it pruned
            key = (choice.drop_rate, choice.selector)
            count = self._calls_at[choice.drop_rate] = self._calls_at.get(choice.drop_rate, 0) + 1
            self._selector_calls[key] = self._selector_calls.get(key, 0) + 1
            self._selector_last[key] = count
        # a dynamic tree offers only the children the draft is sure of: its rates per rank are
        # not a static tree's (its calls teach the gain instead)
        if stats.rank_offers and not choice.dynamic:
            self.acceptance.setdefault(key, RankAcceptance()).add_call(stats)
        if stats.new_tokens:
            old = self.expected_new_tokens
            self.expected_new_tokens = (
                stats.new_tokens if old is None else 0.5 * old + 0.5 * stats.new_tokens
            )
        if stats.scored_video and stats.scoring > 0:
            self.scoring_seconds = stats.scoring
        if not self.learn_timing:
            return
        if stats.draft_prefill > 0 and choice.video_tokens:
            extra = max(0.0, stats.draft_prefill - choice.draft_prefill_seconds)
            self._draft_video_seconds.append(extra / choice.video_tokens)
            del self._draft_video_seconds[:-FACTOR_SAMPLES]
        steps = len(stats.accepted_lengths)
        spec_decode = stats.decode - stats.plain_decode
        if steps and choice.raw_step_seconds > 0:
            factors = self._dynamic_factors if choice.dynamic else self._spec_factors
            _push(factors, spec_decode / (steps * choice.raw_step_seconds))
        if stats.plain_tokens and choice.raw_token_seconds > 0:
            sample = stats.plain_decode / (stats.plain_tokens * choice.raw_token_seconds)
            _push(self._plain_factors, sample)


def _reads_features(selector: str | None) -> bool:
    return selector in names.FEATURE_SELECTORS


def _checked_selectors(selectors) -> tuple[str, ...] | None:
    """``AutoPolicy(selectors=)``: None, or distinct built-in selector names."""
    if selectors is None:
        return None
    if isinstance(selectors, str) or not isinstance(selectors, (list, tuple)):
        raise ValueError(f"selectors must be a list of selector names, got {selectors!r}")
    chosen = tuple(selectors)
    if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(names.SELECTORS):
        raise ValueError(
            f"selectors must be distinct names among {', '.join(names.SELECTORS)}, "
            f"got {selectors!r}"
        )
    return chosen


def _checked_budgets(budgets, tree) -> tuple[int, ...]:
    """``AutoPolicy(dynamic_budgets=)``: distinct budgets a :class:`DynamicTree` accepts."""
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, (list, tuple)):
        raise ValueError(f"dynamic_budgets must be a list of node budgets, got {budgets!r}")
    for budget in budgets:
        DynamicTree(budget=budget)  # its own one-line error
    if len(set(budgets)) != len(budgets):
        raise ValueError(f"dynamic_budgets must be distinct, got {budgets!r}")
    if budgets and tree is not None:
        raise ValueError("AutoPolicy(tree=) pins the tree: no dynamic_budgets with it")
    return tuple(budgets)


def _rounded(rates) -> tuple[tuple[float, ...], ...]:
    """Rates as the tree search takes them, a table of 3 decimals (:func:`ranked_paths` caches
    by them)."""
    return tuple(tuple(round(r, 3) for r in row) for row in rate_table(rates))


def _clamped(ratio: float) -> float:
    """An observed-to-predicted ratio kept in [0.5, 3] (one odd call does not swing it)."""
    return min(3.0, max(0.5, ratio))


def _push(samples: list[float], value: float) -> None:
    samples.append(_clamped(value))
    del samples[:-FACTOR_SAMPLES]
