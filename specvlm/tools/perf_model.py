"""A roofline performance model of SpecVLM vs plain decoding on GPUs.

Every forward is modelled as ``max(bytes / bandwidth, flops / tensor_rate) + layers * launch``:
the weights are read once per forward, the KV cache once per forward, and the GEMM flops are
``2 * params * tokens``; attention flops are added for prefills. Bandwidth and tensor rate are
the datasheet peaks times an achievable fraction (defaults: 80% of HBM, 60% of dense 16-bit
tensor throughput, typical of large GEMMs and streaming reads on H100s). A model too big for one
GPU is split over ``gpus`` GPUs either as transformers' ``device_map="auto"`` does (layers in
sequence: one GPU works at a time, so rates do *not* add up; the published code ran this way) or
with tensor parallelism (``tensor_parallel=True``: rates add up, plus an all-reduce per layer).

Inputs that are *not* modelled but given: tau (mean tokens per target verification), the tree
(nodes, depth) and the drop rate. So the model answers "given this tau, what speedup?", and
``break_even_video_tokens`` answers "from what video length does SpecVLM pay off end to end?".
``python -m specvlm.tools.perf_model`` prints the table of ``docs/performance.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Gpu:
    name: str
    hbm_gbs: float  # datasheet HBM bandwidth, GB/s
    tc_tflops: float  # datasheet dense 16-bit tensor TFLOP/s
    bw_fraction: float = 0.80
    tc_fraction: float = 0.60
    launch_us: float = 8.0  # per layer and forward: kernel launches, norms, small ops
    allreduce_us: float = 12.0  # per layer and forward, with tensor parallelism (gpus > 1)

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


MODELS = {
    "llava-ov-72b": Llm("LLaVA-OneVision-72B (Qwen2-72B)", 72.7e9, 80, 64, 8, 128),
    "llava-ov-7b": Llm("LLaVA-OneVision-7B (Qwen2-7B)", 7.6e9, 28, 28, 4, 128),
    "qwen2.5-vl-32b": Llm("Qwen2.5-VL-32B", 32.8e9, 64, 40, 8, 128),
    "qwen2.5-vl-7b": Llm("Qwen2.5-VL-7B", 7.6e9, 28, 28, 4, 128),
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
) -> float:
    """One forward of ``tokens`` new tokens over ``context`` cached ones (``prefill``: the
    tokens attend causally to each other and the context) on ``gpus`` GPUs."""
    weight_bytes = model.params * model.bytes_per_param
    kv_bytes = model.kv_bytes_per_token() * (context + tokens)
    gemm = 2.0 * model.params * tokens
    attn_pairs = tokens * context + (tokens * (tokens + 1) / 2 if prefill else tokens * tokens)
    attn = 4.0 * model.layers * model.heads * model.head_dim * attn_pairs
    width = gpus if tensor_parallel else 1  # device_map="auto": one GPU at a time
    mem = (weight_bytes + kv_bytes) / (gpu.bandwidth * width)
    comp = (gemm + attn) / (gpu.flops * width)
    sync = gpu.allreduce_us if tensor_parallel and gpus > 1 else 0.0
    fixed = model.layers * (gpu.launch_us + sync) * 1e-6
    return max(mem, comp) + fixed


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
    tau: float = 3.9  # mean accepted length (published 3.8-4.15 at 90% pruning)
    tree_nodes: int = 48
    tree_depth: int = 6
    text_rows: int = 64  # query rows of the scores (text after the video)
    tensor_parallel: bool = False  # False: device_map="auto" layer split (as published)


@dataclass(frozen=True)
class Projection:
    ar_decode_s: float
    sd_decode_s: float
    ar_e2e_s: float
    sd_e2e_s: float
    scoring_s: float
    draft_prefill_s: float

    @property
    def decode_speedup(self) -> float:
        return self.ar_decode_s / self.sd_decode_s

    @property
    def e2e_speedup(self) -> float:
        return self.ar_e2e_s / self.sd_e2e_s


def project(s: Scenario, gpu: Gpu = H100) -> Projection:
    """Decode-only and end-to-end times of the target's greedy decoding vs SpecVLM."""
    tgt, drf = MODELS[s.target], MODELS[s.draft]
    prompt = s.text_tokens + s.video_tokens
    kept = s.text_tokens + int(s.video_tokens * (1.0 - s.drop_rate))
    prefill = forward_seconds(
        tgt, gpu, prompt, 0, gpus=s.target_gpus, prefill=True, tensor_parallel=s.tensor_parallel
    )
    # Scores: QK^T of the text rows, twice (two passes), per layer, compute-bound.
    score_flops = tgt.layers * 2.0 * tgt.heads * s.text_rows * (prompt + s.video_tokens)
    score_flops *= tgt.head_dim * 2.0
    width = s.target_gpus if s.tensor_parallel else 1
    scoring = score_flops / (gpu.flops * width) + tgt.layers * gpu.launch_us * 2e-6
    draft_prefill = forward_seconds(drf, gpu, kept, 0, gpus=s.draft_gpus, prefill=True)

    ar_decode = sum(
        forward_seconds(
            tgt, gpu, 1, prompt + i, gpus=s.target_gpus, tensor_parallel=s.tensor_parallel
        )
        for i in range(0, s.new_tokens, max(1, s.new_tokens // 16))
    ) * (s.new_tokens / len(range(0, s.new_tokens, max(1, s.new_tokens // 16))))
    steps = s.new_tokens / s.tau
    mid = s.new_tokens // 2  # caches at mid-generation stand for the average step
    per_level = max(1, round(s.tree_nodes / s.tree_depth))
    draft_step = forward_seconds(drf, gpu, 1, kept + mid, gpus=s.draft_gpus) + (
        s.tree_depth - 1
    ) * forward_seconds(drf, gpu, per_level, kept + mid, gpus=s.draft_gpus)
    verify = forward_seconds(
        tgt,
        gpu,
        s.tree_nodes + 1,
        prompt + mid,
        gpus=s.target_gpus,
        tensor_parallel=s.tensor_parallel,
    )
    sd_decode = steps * (draft_step + verify)
    return Projection(
        ar_decode_s=ar_decode,
        sd_decode_s=sd_decode,
        ar_e2e_s=prefill + ar_decode,
        sd_e2e_s=prefill + scoring + draft_prefill + sd_decode,
        scoring_s=scoring,
        draft_prefill_s=draft_prefill,
    )


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


PAIRS = (
    ("llava-ov-72b", "llava-ov-7b", 4, 1, "2.68x (A100s, decode only)"),
    ("qwen2.5-vl-32b", "qwen2.5-vl-7b", 2, 1, "2.11x (A100s, decode only)"),
)


def table(
    gpu: Gpu = H100, video=(4096, 16384, 65536), taus=(3.0, 3.9), tensor_parallel: bool = False
) -> str:
    lines = [
        "| target / draft (GPUs) | video tokens | tau | decode speedup | end-to-end speedup "
        "| published |",
        "|---|---|---|---|---|---|",
    ]
    for target, draft, tg, dg, published in PAIRS:
        for n in video:
            for tau in taus:
                sc = Scenario(target, draft, tg, dg, n, tau=tau, tensor_parallel=tensor_parallel)
                p = project(sc, gpu)
                lines.append(
                    f"| {target} / {draft} ({tg}+{dg}) | {n} | {tau} | {p.decode_speedup:.2f}x "
                    f"| {p.e2e_speedup:.2f}x | {published} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    for tp in (False, True):
        print(f"\n{'tensor parallel' if tp else 'device_map=auto (layer split)'}\n")
        print(table(tensor_parallel=tp))
        for target, draft, tg, dg, _ in PAIRS:
            for tau in (2.0, 3.0, 3.9):
                sc = Scenario(target, draft, tg, dg, 0, tau=tau, tensor_parallel=tp)
                print(
                    f"break-even video tokens, {target}/{draft}, tau {tau}: "
                    f"{break_even_video_tokens(sc)}"
                )
