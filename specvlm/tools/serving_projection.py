"""Decode speed of SpecVLM inside vLLM, projected for H100s from the roofline of
:mod:`specvlm.tools.perf_model` (``python -m specvlm.tools.serving_projection`` prints the table
of ``docs/serving.md``).

What vLLM runs per step, for ``B`` concurrent requests and chains of ``k`` tokens:

* the target alone: one forward of ``B`` tokens;
* with the plugin: the target verifies ``B * (k + 1)`` tokens in one forward, and the draft runs
  ``k`` forwards (the pending tokens, then one per chain position but the last) on its pruned
  context.

How the draft runs (:data:`DRAFTING`):

* ``"per_request"``: request after request (``B * k`` forwards of one request), as the plugin's
  first version did;
* ``"batched"``: ``k`` forwards of ``B`` requests (:mod:`specvlm.vllm_plugin.batched`), each
  also copying every request's draft cache into the batch and back (counted as four reads and
  writes of the draft caches; one request drafts on its own cache, no copy);
* ``"persistent"``: the same forwards on a batched draft cache that persists across steps, so
  nothing is copied (the plugin as built: :class:`specvlm.vllm_plugin.batched.BatchedDraftCache`).

Where the draft runs (:data:`PLACEMENT`):

* ``"replicated"``: every target rank runs the whole draft (vLLM builds the proposer on every
  rank), so a draft forward takes one GPU's time;
* ``"tensor_parallel"``: the draft is sharded over the target's ranks like the target (heads and
  MLP split), so its weights and KV reads are split over the GPUs, plus two all-reduces per draft
  layer (after attention and after the MLP), each costing ``Gpu.allreduce_us``; the output
  projection (vocabulary x hidden) stays whole on every rank.

A step emits ``(1 - a**(k + 1)) / (1 - a)`` tokens per request on average when each chain
position is accepted with probability ``a`` (given, not modelled). Each forward costs
``max(bytes / bandwidth, flops / tensor rate) + per-layer overhead``: the weights and every
request's KV cache read once, the GEMM flops, and each request's attention over its own context.
The target's per-layer overhead under tensor parallelism is :mod:`~specvlm.tools.perf_model`'s
(one ``allreduce_us`` per layer). Decode only: the prefill, the scoring and the draft prefill are
not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from specvlm.tools.perf_model import H100, MODELS, Gpu, Llm


@dataclass(frozen=True)
class ServingScenario:
    target: str
    draft: str
    target_gpus: int  # tensor parallel
    video_tokens: int
    text_tokens: int = 200
    new_tokens: int = 256
    drop_rate: float = 0.9
    k: int = 4


DRAFTING = ("per_request", "batched", "persistent")
PLACEMENT = ("replicated", "tensor_parallel")
DRAFT_ALLREDUCES_PER_LAYER = 2  # a sharded draft layer: after attention, after the MLP
# the draft's output projection (vocabulary x hidden, from the checkpoints' configs): a sharded
# draft splits only the decoder layers, so every rank still reads all of it
DRAFT_HEAD_PARAMS = {
    "qwen2.5-vl-3b": 151936 * 2048,
    "qwen2.5-vl-7b": 152064 * 3584,
    "llava-ov-7b": 152064 * 3584,
    "llava-ov-0.5b": 151936 * 896,
}


def batch_forward_seconds(
    model: Llm, gpu: Gpu, gpus: int, batch: int, tokens: int, ctx: int, sync_us: float | None = None
):
    """One forward of ``tokens`` new tokens for each of ``batch`` requests, each request's cache
    holding ``ctx`` entries, over ``gpus`` GPUs with tensor parallelism; ``sync_us``: the
    collectives per layer (default: one ``gpu.allreduce_us`` when ``gpus > 1``)."""
    kv = model.kv_bytes_per_token() * batch * (ctx + tokens)
    gemm = 2.0 * model.params * batch * tokens
    attn = 4.0 * model.layers * model.heads * model.head_dim * batch * tokens * (ctx + tokens)
    mem = (model.weight_bytes + kv) / (gpu.bandwidth * gpus)
    comp = (gemm + attn) / (gpu.flops * gpus)
    if sync_us is None:
        sync_us = gpu.allreduce_us if gpus > 1 else 0.0
    return max(mem, comp) + model.layers * (gpu.captured_us + sync_us) * 1e-6


def drafting_seconds(
    s: ServingScenario, batch: int, drafting: str, placement: str, gpu: Gpu = H100
) -> float:
    """The draft's time per step: ``k`` forwards (``B * k`` per request), see the module
    docstring for ``drafting`` and ``placement``."""
    if drafting not in DRAFTING or placement not in PLACEMENT:
        raise ValueError(f"drafting must be one of {DRAFTING} and placement one of {PLACEMENT}")
    draft = MODELS[s.draft]
    ctx = s.text_tokens + int(s.video_tokens * (1.0 - s.drop_rate)) + s.new_tokens // 2
    gpus, sync = 1, 0.0
    if placement == "tensor_parallel" and s.target_gpus > 1:
        gpus, sync = s.target_gpus, DRAFT_ALLREDUCES_PER_LAYER * gpu.allreduce_us
        # the output projection is read whole on every rank: as (gpus - 1) more copies of it
        # split over the gpus (weight bytes and GEMM flops alike)
        draft = replace(draft, params=draft.params + DRAFT_HEAD_PARAMS[s.draft] * (gpus - 1))
    if drafting == "per_request":
        return batch * s.k * batch_forward_seconds(draft, gpu, gpus, 1, 1, ctx, sync)
    copies = 0.0
    if drafting == "batched" and batch > 1:  # one request drafts on its own cache: no copy
        copied = draft.kv_bytes_per_token() * batch * ctx / gpus  # each GPU copies its shard
        copies = 4 * 2.0 * copied / gpu.bandwidth  # pad, stack, append, copy back: read + write
    return s.k * (batch_forward_seconds(draft, gpu, gpus, batch, 1, ctx, sync) + copies)


def tokens_per_step(acceptance: float, k: int) -> float:
    """Mean tokens a chain of ``k`` emits per step (accepted prefix + the target's own)."""
    if acceptance >= 1.0:
        return k + 1.0
    return (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)


def decode_speedup(
    s: ServingScenario,
    batch: int,
    acceptance: float,
    *,
    drafting: str = "persistent",
    placement: str = "replicated",
    gpu: Gpu = H100,
) -> float:
    """Target-alone decode time over SpecVLM's, at mid-generation caches."""
    target = MODELS[s.target]
    ctx_t = s.text_tokens + s.video_tokens + s.new_tokens // 2
    alone = batch_forward_seconds(target, gpu, s.target_gpus, batch, 1, ctx_t)
    verify = batch_forward_seconds(target, gpu, s.target_gpus, batch, s.k + 1, ctx_t)
    drafting_s = drafting_seconds(s, batch, drafting, placement, gpu)
    return tokens_per_step(acceptance, s.k) * alone / (verify + drafting_s)


SCENARIOS = (
    ServingScenario("qwen2.5-vl-32b", "qwen2.5-vl-3b", 2, 16384),
    ServingScenario("llava-ov-72b", "llava-ov-7b", 4, 16384),
)


# (drafting, placement, how the table names it)
MODES = (
    ("per_request", "replicated", "per request, replicated (the first version)"),
    ("batched", "replicated", "batched with cache copies, replicated (the previous build)"),
    ("persistent", "replicated", "persistent batched cache, replicated (built)"),
    ("persistent", "tensor_parallel", "persistent batched cache, draft tensor-parallel"),
)


def table(batches=(1, 4, 8), acceptances=(0.6, 0.8), modes=MODES) -> str:
    head = "| target / draft (H100s, tensor parallel) | chain acceptance | drafting |"
    head += "".join(f" {b} request{'s' if b > 1 else ''} |" for b in batches)
    rows = [head, "|---|---|---|" + "---|" * len(batches)]
    for s in SCENARIOS:
        for a in acceptances:
            for drafting, placement, how in modes:
                cells = "".join(
                    f" {decode_speedup(s, b, a, drafting=drafting, placement=placement):.2f}x |"
                    for b in batches
                )
                rows.append(
                    f"| {MODELS[s.target].name} ({s.target_gpus}) / {MODELS[s.draft].name} | "
                    f"{a:.1f} ({tokens_per_step(a, s.k):.2f} tokens/step) | {how} |{cells}"
                )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
