"""A performance model of the target alone, naive speculative decoding and SpecVLM.

Three ways of decoding the same prompt (``prompt = text + video`` tokens, ``new`` tokens out):

* **target alone** (autoregressive): one target forward per token.
* **naive SD**: the draft sees the whole prompt (drop rate 0). Per step it feeds the pending
  chain, then one forward per tree level below the deepest; the target verifies ``N + 1`` tokens
  in one forward; a step emits ``tau`` tokens on average.
* **SpecVLM**: the same loop with the draft on the pruned prompt (``text + (1 - drop) * video``
  tokens), so its prefill, its forwards and its KV cache shrink; the target's prefill also
  scores the video tokens (two extra passes over the text rows' ``QK^T``).

A forward's cost comes from a *cost source*: either the roofline of a GPU (:class:`Roofline`:
``max(bytes / bandwidth, flops / tensor_rate) + layers * fixed``, the weights and the KV cache
read once per forward, ``2 * params * tokens`` GEMM flops plus attention flops; datasheet peaks
times achievable fractions, 80% of HBM and 60% of dense 16-bit tensor throughput on H100s), or
times measured on real hardware (:class:`Measured`, e.g. :class:`specvlm.calibration.ForwardCosts`
tables, the automatic policy's own measurements). A model too big for one GPU is split over
``gpus`` GPUs either as transformers' ``device_map="auto"`` does (layers in sequence: one GPU
works at a time, so rates do *not* add up; the published code ran this way) or with tensor
parallelism (``tensor_parallel=True``: rates add up, plus an all-reduce per layer).
``fixed`` is the cost per layer of the forward's regime (:mod:`specvlm.tools.fixed_costs`):
``"eager"`` transformers code or ``"captured"`` (static cache, CUDA-graph replay), chosen per
side (:data:`MIXES`; default :data:`DEFAULT_MIX`, draft captured and target eager, what the
library runs on a GPU); the target alone runs in the target's regime, prefills eagerly.

Inputs that are *not* modelled but given: tau of each method (mean tokens per verification), the
tree and the drop rate. So the model answers "given these taus, what speed and memory?", and
:func:`tau_ratio_to_win` answers "how much tau may pruning cost before naive SD is faster?".
``python -m specvlm.tools.perf_model`` prints the tables of ``docs/performance.md``;
:func:`predict_measured_decode` is the same model fed with times measured on a CPU, checked
against measured speedups in ``tests/test_perf_model_measured.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from specvlm.tools.fixed_costs import CAPTURED, CAPTURED_US, EAGER, EAGER_US, check_regime
from specvlm.trees import Tree, tree_of_size


@dataclass(frozen=True)
class Gpu:
    name: str
    hbm_gbs: float  # datasheet HBM bandwidth, GB/s
    tc_tflops: float  # datasheet dense 16-bit tensor TFLOP/s
    bw_fraction: float = 0.80
    tc_fraction: float = 0.60
    # Fixed cost per layer and forward, by regime (fixed_costs.py: where each number comes from):
    captured_us: float = CAPTURED_US  # a captured forward: CUDA-graph replay
    eager_us: float = EAGER_US  # eager transformers code: each op issued from Python
    allreduce_us: float = 12.0  # per layer and forward, with tensor parallelism (gpus > 1)

    def fixed_us(self, regime: str) -> float:
        """Fixed cost per layer and forward of ``regime`` (``"eager"`` or ``"captured"``)."""
        check_regime(regime)
        return self.eager_us if regime == EAGER else self.captured_us

    @property
    def bandwidth(self) -> float:  # bytes/s
        return self.hbm_gbs * 1e9 * self.bw_fraction

    @property
    def flops(self) -> float:  # flop/s
        return self.tc_tflops * 1e12 * self.tc_fraction


H100 = Gpu("H100 SXM", 3350.0, 989.0)


@dataclass(frozen=True)
class Llm:
    name: str
    params: float  # language-model parameters
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    bytes_per_param: int = 2  # bf16

    def kv_bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_param

    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per_param


MODELS = {
    "llava-ov-72b": Llm("LLaVA-OneVision-72B (Qwen2-72B)", 72.7e9, 80, 64, 8, 128),
    "llava-ov-7b": Llm("LLaVA-OneVision-7B (Qwen2-7B)", 7.6e9, 28, 28, 4, 128),
    "llava-ov-0.5b": Llm("LLaVA-OneVision-0.5B (Qwen2-0.5B)", 0.49e9, 24, 14, 2, 64),
    "qwen2.5-vl-32b": Llm("Qwen2.5-VL-32B", 32.8e9, 64, 40, 8, 128),
    "qwen2.5-vl-7b": Llm("Qwen2.5-VL-7B", 7.6e9, 28, 28, 4, 128),
    "qwen2.5-vl-3b": Llm("Qwen2.5-VL-3B", 3.09e9, 36, 16, 2, 128),
}


def forward_seconds(
    model: Llm,
    gpu: Gpu,
    tokens: int,
    context: int,
    *,
    gpus: int = 1,
    prefill: bool = False,
    tensor_parallel: bool = False,
    regime: str = CAPTURED,
) -> float:
    """One forward of ``tokens`` new tokens over ``context`` cached ones (``prefill``: the
    tokens attend causally to each other and the context) on ``gpus`` GPUs, its fixed cost per
    layer that of ``regime`` (``"captured"``: a CUDA-graph replay; ``"eager"``)."""
    kv_bytes = model.kv_bytes_per_token() * (context + tokens)
    gemm = 2.0 * model.params * tokens
    attn_pairs = tokens * context + (tokens * (tokens + 1) / 2 if prefill else tokens * tokens)
    attn = 4.0 * model.layers * model.heads * model.head_dim * attn_pairs
    width = gpus if tensor_parallel else 1  # device_map="auto": one GPU at a time
    mem = (model.weight_bytes + kv_bytes) / (gpu.bandwidth * width)
    comp = (gemm + attn) / (gpu.flops * width)
    sync = gpu.allreduce_us if tensor_parallel and gpus > 1 else 0.0
    fixed = model.layers * (gpu.fixed_us(regime) + sync) * 1e-6
    return max(mem, comp) + fixed


# -------------------------------------------------------------------------------------------
# Cost sources: a forward of n tokens after a cache of c entries; a prefill of c tokens
# -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Roofline:
    """One model's forwards on GPUs, from the roofline above."""

    model: Llm
    gpu: Gpu = H100
    gpus: int = 1
    tensor_parallel: bool = False
    regime: str = CAPTURED  # of the decode forwards; prefills run eagerly (the library's)

    def forward(self, tokens: int, context: int) -> float:
        return forward_seconds(
            self.model,
            self.gpu,
            tokens,
            context,
            gpus=self.gpus,
            tensor_parallel=self.tensor_parallel,
            regime=self.regime,
        )

    def prefill(self, tokens: int) -> float:
        return forward_seconds(
            self.model,
            self.gpu,
            tokens,
            0,
            gpus=self.gpus,
            prefill=True,
            tensor_parallel=self.tensor_parallel,
            regime=EAGER,
        )

    seconds = forward  # the name the automatic policy's cost tables use


@dataclass(frozen=True)
class Measured:
    """One model's forwards as measured: ``table`` has ``seconds(n, context)`` and
    ``prefill_seconds(context)`` (a :class:`specvlm.calibration.ForwardCosts`)."""

    table: object

    def forward(self, tokens: int, context: int) -> float:
        return self.table.seconds(tokens, context)

    def prefill(self, tokens: int) -> float:
        return self.table.prefill_seconds(tokens)

    seconds = forward


def level_widths(tree: Tree) -> list[int]:
    """Nodes per depth: ``[w_1, ..., w_depth]``."""
    return [len(tree.nodes_at_depth(d)) for d in range(1, tree.depth + 1)]


def drafting_seconds(draft, tree: Tree, ctx_d: int, depth: int | None = None) -> float:
    """A step's drafting of ``tree`` to ``depth`` (default: all of it): the draft feeds the
    pending token, then each level above the deepest drafted one."""
    widths = level_widths(tree)[: depth or tree.depth]
    return draft.forward(1, ctx_d) + sum(draft.forward(w, ctx_d) for w in widths[:-1])


def step_seconds(target, draft, tree: Tree, ctx_t: int, ctx_d: int, depth: int | None = None):
    """One speculative step with ``tree`` drafted to ``depth`` (default: all of it): the
    drafting (:func:`drafting_seconds`), then the target verifies the root and every drafted
    node."""
    nodes = sum(level_widths(tree)[: depth or tree.depth])
    return drafting_seconds(draft, tree, ctx_d, depth) + target.forward(nodes + 1, ctx_t)


def decode_seconds(target, tokens: int, context: int, samples: int = 16) -> float:
    """``tokens`` target forwards of one token, the cache growing from ``context``."""
    if tokens <= 0:
        return 0.0
    stride = max(1, tokens // samples)
    points = range(0, tokens, stride)
    return sum(target.forward(1, context + i) for i in points) * tokens / len(points)


# -------------------------------------------------------------------------------------------
# Projections of the three methods on GPUs
# -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    target: str
    draft: str
    target_gpus: int
    draft_gpus: int
    video_tokens: int
    text_tokens: int = 200  # prompt text (system + question)
    new_tokens: int = 256
    drop_rate: float = 0.9
    tau: float = 3.9  # SpecVLM's mean accepted length (published 3.8-4.15 at 90% pruning)
    tau_naive: float | None = None  # naive SD's (None: the same as SpecVLM's)
    tree_nodes: int = 48
    tree_depth: int = 6
    text_rows: int = 64  # query rows of the scores (text after the video)
    tensor_parallel: bool = False  # False: device_map="auto" layer split (as published)
    # How each side's decode forwards run (the target alone's too: the baseline is the target
    # in its own regime); the default is what the library ships on a GPU (DEFAULT_MIX).
    draft_regime: str = CAPTURED
    target_regime: str = EAGER

    @property
    def naive_tau(self) -> float:
        return self.tau if self.tau_naive is None else self.tau_naive

    def sides(self, gpu: Gpu) -> tuple[Roofline, Roofline]:
        """``(target, draft)`` cost sources: the roofline in each side's regime."""
        target = Roofline(
            MODELS[self.target], gpu, self.target_gpus, self.tensor_parallel, self.target_regime
        )
        return target, Roofline(MODELS[self.draft], gpu, self.draft_gpus, regime=self.draft_regime)


# Regime mixes a projection can take: (name, draft regime, target regime, what runs this way).
MIXES = (
    ("both eager", EAGER, EAGER, "capture=False"),
    ("draft captured, target eager", CAPTURED, EAGER, "the library's default on a GPU"),
    ("both captured", CAPTURED, CAPTURED, "the goal: the target's verification captured too"),
)
DEFAULT_MIX = MIXES[1]  # accelerate(capture="auto") on a GPU; the target's verify stays eager


def with_mix(s: Scenario, mix: tuple) -> Scenario:
    return replace(s, draft_regime=mix[1], target_regime=mix[2])


@dataclass(frozen=True)
class Projection:
    ar_decode_s: float
    sd_decode_s: float  # SpecVLM
    naive_decode_s: float
    ar_e2e_s: float
    sd_e2e_s: float
    naive_e2e_s: float
    prefill_s: float  # the target's prefill (all three methods)
    scoring_s: float
    draft_prefill_s: float  # SpecVLM's, on the kept tokens
    naive_draft_prefill_s: float  # on the whole prompt
    sd_step_s: float
    naive_step_s: float
    ar_bytes: float  # weights + KV caches at the end of generation
    sd_bytes: float
    naive_bytes: float

    @property
    def decode_speedup(self) -> float:
        return self.ar_decode_s / self.sd_decode_s

    @property
    def e2e_speedup(self) -> float:
        return self.ar_e2e_s / self.sd_e2e_s

    @property
    def naive_decode_speedup(self) -> float:
        return self.ar_decode_s / self.naive_decode_s

    @property
    def naive_e2e_speedup(self) -> float:
        return self.ar_e2e_s / self.naive_e2e_s

    @property
    def ar_ttft_s(self) -> float:
        return self.prefill_s

    @property
    def sd_ttft_s(self) -> float:
        return self.prefill_s + self.scoring_s + self.draft_prefill_s

    @property
    def naive_ttft_s(self) -> float:
        return self.prefill_s + self.naive_draft_prefill_s


def project(s: Scenario, gpu: Gpu = H100) -> Projection:
    """Decode, end-to-end time and memory of the target alone, naive SD and SpecVLM."""
    tgt_m, drf_m = MODELS[s.target], MODELS[s.draft]
    target, draft = s.sides(gpu)
    tree = tree_of_size(s.tree_nodes, s.tree_depth)
    prompt = s.text_tokens + s.video_tokens
    kept = s.text_tokens + int(s.video_tokens * (1.0 - s.drop_rate))
    prefill = target.prefill(prompt)
    # Scores: QK^T of the text rows, twice (two passes), per layer, compute-bound.
    score_flops = tgt_m.layers * 2.0 * tgt_m.heads * s.text_rows * (prompt + s.video_tokens)
    score_flops *= tgt_m.head_dim * 2.0
    width = s.target_gpus if s.tensor_parallel else 1
    # two kernel launches per layer (not a decoder layer's few dozen ops): a launch each
    scoring = score_flops / (gpu.flops * width) + tgt_m.layers * gpu.captured_us * 2e-6
    draft_prefill, naive_draft_prefill = draft.prefill(kept), draft.prefill(prompt)

    decode = s.new_tokens - 1  # the first token comes from the prefill
    ar_decode = decode_seconds(target, decode, prompt)
    mid = s.new_tokens // 2  # caches at mid-generation stand for the average step
    sd_step = step_seconds(target, draft, tree, prompt + mid, kept + mid)
    naive_step = step_seconds(target, draft, tree, prompt + mid, prompt + mid)
    sd_decode = decode / s.tau * sd_step
    naive_decode = decode / s.naive_tau * naive_step

    final = s.new_tokens + s.tree_nodes  # cache entries added by the end (+ a step's tree)
    ar_bytes = tgt_m.weight_bytes + tgt_m.kv_bytes_per_token() * (prompt + s.new_tokens)
    draft_kv = drf_m.kv_bytes_per_token()
    sd_bytes = ar_bytes + drf_m.weight_bytes + draft_kv * (kept + final)
    naive_bytes = ar_bytes + drf_m.weight_bytes + draft_kv * (prompt + final)
    sd_bytes += tgt_m.kv_bytes_per_token() * s.tree_nodes
    naive_bytes += tgt_m.kv_bytes_per_token() * s.tree_nodes
    return Projection(
        ar_decode_s=ar_decode,
        sd_decode_s=sd_decode,
        naive_decode_s=naive_decode,
        ar_e2e_s=prefill + ar_decode,
        sd_e2e_s=prefill + scoring + draft_prefill + sd_decode,
        naive_e2e_s=prefill + naive_draft_prefill + naive_decode,
        prefill_s=prefill,
        scoring_s=scoring,
        draft_prefill_s=draft_prefill,
        naive_draft_prefill_s=naive_draft_prefill,
        sd_step_s=sd_step,
        naive_step_s=naive_step,
        ar_bytes=ar_bytes,
        sd_bytes=sd_bytes,
        naive_bytes=naive_bytes,
    )


@dataclass(frozen=True)
class TauRatio:
    """SpecVLM is faster than naive SD when its tau is at least this share of naive SD's."""

    decode: float
    e2e: float


def tau_ratio_to_win(s: Scenario, gpu: Gpu = H100) -> TauRatio:
    """The break-even of pruning against naive SD, as a ratio of taus: SpecVLM's decode is
    faster when ``tau / tau_naive > sd_step / naive_step``; end to end, the draft prefill it
    saves and the scoring it adds count too (at naive SD's tau)."""
    p = project(s, gpu)
    decode = s.new_tokens - 1
    saved = p.naive_draft_prefill_s - p.draft_prefill_s - p.scoring_s
    e2e = decode * p.sd_step_s / (s.naive_tau * saved + decode * p.naive_step_s)
    return TauRatio(p.sd_step_s / p.naive_step_s, e2e)


def break_even_video_tokens(s: Scenario, gpu: Gpu = H100, *, hi: int = 1 << 17) -> int | None:
    """Smallest video length at which SpecVLM's end-to-end time beats the target's (None if it
    never does up to ``hi``): bisection over ``video_tokens``."""

    def wins(n: int) -> bool:
        return project(replace(s, video_tokens=n), gpu).e2e_speedup > 1.0

    if wins(0):
        return 0
    if not wins(hi):
        return None
    lo = 0
    while hi - lo > 16:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if wins(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class PolicyTree:
    """SpecVLM and naive SD with the tree the automatic policy would pick (:mod:`specvlm.policy`)
    for these costs, instead of the default 48-node tree."""

    tree: Tree
    naive_tree: Tree
    decode_speedup: float
    naive_decode_speedup: float


def rates_for_tau(tau: float, tree: Tree | None = None) -> tuple[float, ...]:
    """Acceptance by draft rank that gives ``tree`` (default: the default tree) this tau: the
    policy's prior scaled by one factor (bisection)."""
    from specvlm.policy import PRIOR, tree_tau

    tree = tree or tree_of_size(48, 6)
    if not 1.0 <= tau <= tree.depth + 1:
        raise ValueError(f"tau {tau} is out of reach of a tree of depth {tree.depth}")
    lo, hi = 0.0, 1.0 / PRIOR[0]
    for _ in range(60):
        k = (lo + hi) / 2
        lo, hi = (k, hi) if tree_tau(tree, tuple(k * p for p in PRIOR)) < tau else (lo, k)
    return tuple(min(0.999, lo * p) for p in PRIOR)


def project_policy_tree(s: Scenario, gpu: Gpu = H100) -> PolicyTree:
    """Decode speedups with the policy's best static tree for each method, its acceptance by
    rank derived from the method's tau with the default tree (:func:`rates_for_tau`)."""
    from specvlm.policy import best_tree

    target, draft = s.sides(gpu)
    prompt = s.text_tokens + s.video_tokens
    kept = s.text_tokens + int(s.video_tokens * (1.0 - s.drop_rate))
    decode = s.new_tokens - 1
    mid = s.new_tokens // 2
    ar = decode_seconds(target, decode, prompt)
    default = tree_of_size(s.tree_nodes, s.tree_depth)
    chosen = []
    for tau, ctx_d in ((s.tau, kept + mid), (s.naive_tau, prompt + mid)):
        rates = rates_for_tau(tau, default)
        chosen.append(best_tree(rates, target, draft, prompt + mid, ctx_d, decode))
    sd, naive = chosen
    return PolicyTree(sd.tree, naive.tree, ar / sd.seconds, ar / naive.seconds)


def policy_table(
    gpu: Gpu = H100, video=(16384,), tau: float = 3.9, pairs=None, mix: tuple = DEFAULT_MIX
) -> str:
    """The policy's trees against the default tree, layer split and tensor parallel."""
    lines = [
        "| target / draft (GPUs) | split | video tokens | default tree: naive / SpecVLM "
        "| policy's tree (nodes, depth) | policy's tree: naive / SpecVLM |",
        "|---|---|---|---|---|---|",
    ]
    for target, draft, tg, dg, _ in pairs or PAIRS:
        for tp in (False, True):
            for n in video:
                sc = Scenario(target, draft, tg, dg, n, tau=tau, tensor_parallel=tp)
                sc = with_mix(sc, mix)
                p, q = project(sc, gpu), project_policy_tree(sc, gpu)
                lines.append(
                    f"| {target} / {draft} ({tg}+{dg}) | {'tensor' if tp else 'layers'} | {n} "
                    f"| {p.naive_decode_speedup:.2f}x / {p.decode_speedup:.2f}x "
                    f"| {q.tree.size}, {q.tree.depth} "
                    f"| {q.naive_decode_speedup:.2f}x / {q.decode_speedup:.2f}x |"
                )
    return "\n".join(lines)


# (target, draft, target GPUs, draft GPUs, published decode speedup)
PAIRS = (
    ("llava-ov-72b", "llava-ov-7b", 4, 1, "2.68x (A100s, decode only)"),
    ("llava-ov-72b", "llava-ov-0.5b", 4, 1, "-"),
    ("qwen2.5-vl-32b", "qwen2.5-vl-7b", 2, 1, "2.11x (A100s, decode only)"),
    ("qwen2.5-vl-32b", "qwen2.5-vl-3b", 2, 1, "-"),
)


def table(
    gpu: Gpu = H100,
    video=(4096, 16384, 65536),
    taus=(3.9,),
    tensor_parallel: bool = False,
    pairs=PAIRS,
    mix: tuple = DEFAULT_MIX,
) -> str:
    """Naive SD beside SpecVLM for every pair, video length and tau (naive SD at the same tau:
    the published finding that the draft is insensitive to pruning; the last column says how
    much tau pruning may cost before naive SD wins)."""
    lines = [
        "| target / draft (GPUs) | video tokens | tau | decode naive / SpecVLM "
        "| end to end naive / SpecVLM | first token ms AR / naive / SpecVLM "
        "| memory GB AR / naive / SpecVLM | SpecVLM wins above tau ratio (decode / e2e) "
        "| published |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for target, draft, tg, dg, published in pairs:
        for n in video:
            for tau in taus:
                sc = Scenario(target, draft, tg, dg, n, tau=tau, tensor_parallel=tensor_parallel)
                sc = with_mix(sc, mix)
                p, r = project(sc, gpu), tau_ratio_to_win(sc, gpu)
                lines.append(
                    f"| {target} / {draft} ({tg}+{dg}) | {n} | {tau} "
                    f"| {p.naive_decode_speedup:.2f}x / {p.decode_speedup:.2f}x "
                    f"| {p.naive_e2e_speedup:.2f}x / {p.e2e_speedup:.2f}x "
                    f"| {p.ar_ttft_s * 1e3:.0f} / {p.naive_ttft_s * 1e3:.0f} / "
                    f"{p.sd_ttft_s * 1e3:.0f} "
                    f"| {p.ar_bytes / 1e9:.0f} / {p.naive_bytes / 1e9:.0f} / "
                    f"{p.sd_bytes / 1e9:.0f} "
                    f"| {r.decode:.2f} / {r.e2e:.2f} | {published} |"
                )
    return "\n".join(lines)


def regime_table(
    gpu: Gpu = H100, video=(16384,), tau: float = 3.9, tensor_parallel: bool = False, pairs=PAIRS
) -> str:
    """Every regime mix (:data:`MIXES`) side by side: decode speedups of naive SD and SpecVLM
    over the target alone *in the same target regime*, and SpecVLM's milliseconds per token
    (the absolute speed: an eager target makes the baseline slower, not SpecVLM faster)."""
    head = " | ".join(
        f"{name}{' (default)' if (name, d, t, w) == DEFAULT_MIX else ''}: naive / SpecVLM "
        "(SpecVLM ms/token)"
        for name, d, t, w in MIXES
    )
    lines = [f"| target / draft (GPUs) | video tokens | {head} |", "|---|---" + "|---" * 3 + "|"]
    for target, draft, tg, dg, _ in pairs:
        for n in video:
            sc = Scenario(target, draft, tg, dg, n, tau=tau, tensor_parallel=tensor_parallel)
            cells = []
            for mix in MIXES:
                p = project(with_mix(sc, mix), gpu)
                per_token = p.sd_decode_s / (sc.new_tokens - 1) * 1e3
                cells.append(
                    f"{p.naive_decode_speedup:.2f}x / {p.decode_speedup:.2f}x ({per_token:.1f})"
                )
            lines.append(f"| {target} / {draft} ({tg}+{dg}) | {n} | {' | '.join(cells)} |")
    return "\n".join(lines)


# Issue 24's goals: SpecVLM's projected decode speedup, tau 3.9, layer split, 16k video tokens.
GOALS = (("llava-ov-72b", "llava-ov-7b", 4, 1, 2.7), ("qwen2.5-vl-32b", "qwen2.5-vl-7b", 2, 1, 2.1))


def goal_lines(gpu: Gpu = H100, video: int = 16384, tau: float = 3.9) -> list[str]:
    """Each goal in each regime mix: the projected SpecVLM decode speedup, met or missed."""
    lines = []
    for target, draft, tg, dg, goal in GOALS:
        for mix in MIXES:
            sc = with_mix(Scenario(target, draft, tg, dg, video, tau=tau), mix)
            got = project(sc, gpu).decode_speedup
            lines.append(
                f"* {target} / {draft}, {mix[0]}: {got:.2f}x against >= {goal}x: "
                f"{'met' if got >= goal else 'missed'}"
            )
    return lines


# -------------------------------------------------------------------------------------------
# The same model on measured costs (the check against measurement)
# -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Overheads:
    """Seconds a decoding loop spends outside the forwards: per token of the target alone
    (``generate``'s own bookkeeping), and per speculative step ``step + step_per_node * (N+1)``
    (processing and accepting ``N + 1`` rows, committing both caches, emitting)."""

    token: float = 0.0
    step: float = 0.0
    step_per_node: float = 0.0


def predict_measured_decode(run: dict, target, draft, overheads: Overheads = Overheads()) -> float:
    """Decode seconds of one recorded call from measured costs: ``run`` has ``new_tokens``,
    ``ctx_t`` (the target's context at mid-generation) and, for speculation, ``tree`` (rank
    paths), ``ctx_d`` and ``drafted_depths`` (per step: the depth drafting reached)."""
    decode = run["new_tokens"] - 1
    if "tree" not in run:
        return decode * (target.forward(1, run["ctx_t"]) + overheads.token)
    tree = Tree.from_paths(run["tree"])
    total = 0.0
    for depth in run["drafted_depths"]:
        nodes = sum(level_widths(tree)[:depth])
        total += step_seconds(target, draft, tree, run["ctx_t"], run["ctx_d"], depth)
        total += overheads.step + overheads.step_per_node * (nodes + 1)
    return total


def main(argv: list[str] | None = None) -> None:
    """Print the tables of ``docs/performance.md``."""
    import argparse

    from specvlm.tools import fixed_costs

    parser = argparse.ArgumentParser(description="projected speedups of real pairs on H100s")
    parser.add_argument("--eager-us", type=float, help="eager fixed cost per layer (us)")
    parser.add_argument("--captured-us", type=float, help="captured fixed cost per layer (us)")
    parser.add_argument("--report", help="a GPU report's perf_model.json: its fitted costs")
    names = [m[0] for m in MIXES]
    parser.add_argument(
        "--mix", choices=names, default=DEFAULT_MIX[0], help="the regimes of the detailed tables"
    )
    args = parser.parse_args(argv)
    mix = MIXES[names.index(args.mix)]
    gpu, sources = calibrated_gpu(args.report, args.eager_us, args.captured_us)
    print("Fixed costs (per layer and forward):\n")
    print("\n".join(fixed_costs.describe(gpu, sources, fixed_costs.cpu_record())))
    print(f"\nDefault regime: {DEFAULT_MIX[0]} ({DEFAULT_MIX[3]}).")
    for tp in (False, True):
        print(f"\nregimes, {'tensor parallel' if tp else 'layer split'}, tau 3.9\n")
        print(regime_table(gpu, video=(4096, 16384, 65536), tensor_parallel=tp))
    print("\ngoals (issue 24, 16k video tokens, tau 3.9, layer split)\n")
    print("\n".join(goal_lines(gpu)))
    print(f"\nthe automatic policy's tree (tau 3.9 with the default tree), {mix[0]}\n")
    print(policy_table(gpu, mix=mix))
    for tp in (False, True):
        print(f"\n{'tensor parallel' if tp else 'device_map=auto (layer split)'}, {mix[0]}\n")
        print(table(gpu, tensor_parallel=tp, mix=mix))
        for target, draft, tg, dg, _ in PAIRS:
            for tau in (2.0, 3.0, 3.9):
                sc = Scenario(target, draft, tg, dg, 0, tau=tau, tensor_parallel=tp)
                sc = with_mix(sc, mix)
                print(
                    f"break-even video tokens (SpecVLM vs target), {target}/{draft}, tau {tau}: "
                    f"{break_even_video_tokens(sc, gpu)}"
                )


def calibrated_gpu(
    report: str | None, eager_us: float | None, captured_us: float | None, base: Gpu = H100
) -> tuple[Gpu, dict[str, str]]:
    """``base`` with its fixed costs from a GPU report and the overrides (overrides win), and
    the source of each cost that is not the default assumption."""
    from specvlm.tools.fixed_costs import report_costs

    sources: dict[str, str] = {}
    costs: dict[str, float] = {}
    if report:
        for regime, us in report_costs(report).items():
            costs[regime], sources[regime] = us, f"fitted to the GPU report {report}"
    for regime, us in ((EAGER, eager_us), (CAPTURED, captured_us)):
        if us is not None:
            costs[regime], sources[regime] = us, "given on the command line"
    gpu = replace(
        base,
        eager_us=costs.get(EAGER, base.eager_us),
        captured_us=costs.get(CAPTURED, base.captured_us),
    )
    return gpu, sources


if __name__ == "__main__":
    main()
