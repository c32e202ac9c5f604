"""Decode speed of SpecVLM inside vLLM, projected for H100s from the roofline of
:mod:`specvlm.tools.perf_model` (``python -m specvlm.tools.serving_projection`` prints the table
of ``docs/serving.md``).

What vLLM runs per step, for ``B`` concurrent requests and chains of ``k`` tokens:

* the target alone: one forward of ``B`` tokens;
* with the plugin: the target verifies ``B * (k + 1)`` tokens in one forward, and the draft runs
  ``k`` forwards (the pending tokens, then one per chain position but the last) on its pruned
  context. As built, they are batched across requests (``k`` forwards of ``B`` requests,
  :mod:`specvlm.vllm_plugin.batched`), over one persistent batched draft cache that each
  forward writes in place (no cache copies: each request's draft cache is read once per
  forward, by its attention); the rows "per request" are drafting request after request
  (``B * k`` forwards of one request), as the plugin's first version did.

A step emits ``(1 - a**(k + 1)) / (1 - a)`` tokens per request on average when each chain
position is accepted with probability ``a`` (given, not modelled). Each forward costs
``max(bytes / bandwidth, flops / tensor rate) + per-layer overhead``: the weights and every
request's KV cache read once, the GEMM flops, and each request's attention over its own context.
Decode only: the prefill, the scoring and the draft prefill are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def batch_forward_seconds(model: Llm, gpu: Gpu, gpus: int, batch: int, tokens: int, ctx: int):
    """One forward of ``tokens`` new tokens for each of ``batch`` requests, each request's cache
    holding ``ctx`` entries, over ``gpus`` GPUs with tensor parallelism."""
    kv = model.kv_bytes_per_token() * batch * (ctx + tokens)
    gemm = 2.0 * model.params * batch * tokens
    attn = 4.0 * model.layers * model.heads * model.head_dim * batch * tokens * (ctx + tokens)
    mem = (model.weight_bytes + kv) / (gpu.bandwidth * gpus)
    comp = (gemm + attn) / (gpu.flops * gpus)
    sync = gpu.allreduce_us if gpus > 1 else 0.0
    return max(mem, comp) + model.layers * (gpu.captured_us + sync) * 1e-6


def tokens_per_step(acceptance: float, k: int) -> float:
    """Mean tokens a chain of ``k`` emits per step (accepted prefix + the target's own)."""
    if acceptance >= 1.0:
        return k + 1.0
    return (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)


def decode_speedup(
    s: ServingScenario, batch: int, acceptance: float, *, batched_draft: bool, gpu: Gpu = H100
) -> float:
    """Target-alone decode time over SpecVLM's, at mid-generation caches."""
    target, draft = MODELS[s.target], MODELS[s.draft]
    mid = s.new_tokens // 2
    ctx_t = s.text_tokens + s.video_tokens + mid
    ctx_d = s.text_tokens + int(s.video_tokens * (1.0 - s.drop_rate)) + mid
    alone = batch_forward_seconds(target, gpu, s.target_gpus, batch, 1, ctx_t)
    verify = batch_forward_seconds(target, gpu, s.target_gpus, batch, s.k + 1, ctx_t)
    if batched_draft:
        drafting = s.k * batch_forward_seconds(draft, gpu, 1, batch, 1, ctx_d)
    else:
        drafting = batch * s.k * batch_forward_seconds(draft, gpu, 1, 1, 1, ctx_d)
    return tokens_per_step(acceptance, s.k) * alone / (verify + drafting)


SCENARIOS = (
    ServingScenario("qwen2.5-vl-32b", "qwen2.5-vl-3b", 2, 16384),
    ServingScenario("llava-ov-72b", "llava-ov-7b", 4, 16384),
)


def table(batches=(1, 4, 8), acceptances=(0.6, 0.8)) -> str:
    head = "| target / draft (H100s, tensor parallel) | chain acceptance | drafting |"
    head += "".join(f" {b} request{'s' if b > 1 else ''} |" for b in batches)
    rows = [head, "|---|---|---|" + "---|" * len(batches)]
    for s in SCENARIOS:
        for a in acceptances:
            for batched in (False, True):
                cells = "".join(
                    f" {decode_speedup(s, b, a, batched_draft=batched):.2f}x |" for b in batches
                )
                how = "batched (as built)" if batched else "per request"
                rows.append(
                    f"| {MODELS[s.target].name} ({s.target_gpus}) / {MODELS[s.draft].name} | "
                    f"{a:.1f} ({tokens_per_step(a, s.k):.2f} tokens/step) | {how} |{cells}"
                )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
