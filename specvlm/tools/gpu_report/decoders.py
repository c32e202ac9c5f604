"""Step ``decoders``: per-forward times of random-weight text decoders built from the real
configs (no network), in two regimes (``decoders.json``, each row's ``regime``): **eager**,
through the library's own decoder call and cache, and **captured**, a static KV cache and the
same forward replayed as a CUDA graph (:mod:`specvlm.tools.static_forward`; CUDA only: on the
CPU, ``--tiny``, the captured rows are not run); verification of 1 / 8 / 48 nodes and draft
steps over 4k / 16k / 64k cached tokens (tiny configs and contexts with ``--tiny``). A model
whose forward cannot be captured gets one row with the ``error`` instead."""

from __future__ import annotations

import json
import time
from pathlib import Path

from specvlm.tools.gpu_report.child import step_device

# Text-decoder configurations of the real models (from their Hugging Face config.json files):
# (hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings).
DECODERS = {
    "qwen2.5-vl-7b": (3584, 18944, 28, 28, 4, 152064, False),
    "qwen2.5-vl-3b": (2048, 11008, 36, 16, 2, 151936, True),
    "llava-ov-7b": (3584, 18944, 28, 28, 4, 152064, False),
    "llava-ov-0.5b": (896, 4864, 24, 14, 2, 151936, True),
}
TINY_DECODERS = {
    "tiny-target": (128, 256, 2, 4, 2, 512, False),
    "tiny-draft": (64, 128, 2, 4, 1, 512, True),
}
ROLES = {  # which forwards each model does in SpecVLM: verification (target) or drafting
    "qwen2.5-vl-7b": "target",
    "llava-ov-7b": "target",
    "qwen2.5-vl-3b": "draft",
    "llava-ov-0.5b": "draft",
    "tiny-target": "target",
    "tiny-draft": "draft",
}
CONTEXTS = {"gpu": (4096, 16384, 65536), "tiny": (64, 128, 256)}
NODES = (1, 8, 48)


def build_decoder(spec: tuple, device, dtype):
    """A random-weight Qwen2 text decoder (what Qwen2.5-VL and LLaVA-OneVision run) from the
    config numbers, created on ``device`` in ``dtype`` (no download)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    hidden, inter, layers, heads, kv, vocab, tied = spec
    config = Qwen2Config(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=131072,
        rope_theta=1e6,
        attn_implementation="sdpa",
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    return model


def _fill_cache(model, context: int, device, dtype):
    import torch

    from specvlm.decoder import new_cache

    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    cache = new_cache()
    shape = (1, cfg.num_key_value_heads, context, head_dim)
    for layer in range(cfg.num_hidden_layers):
        k = torch.randn(shape, device=device, dtype=dtype)
        cache.update(k, torch.randn_like(k), layer)
    return cache


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forwards(model, context: int, nodes, device, dtype, repeats: int) -> dict[int, float]:
    """Median seconds of one eager decoder forward of ``n`` new tokens over ``context`` cached
    ones (the library's decoder call; the cache is cut back to ``context`` after each)."""
    import torch

    from specvlm.decoder import decoder_forward, keep_cache_entries

    cache = _fill_cache(model, context, device, dtype)
    decoder, head = model.model, model.lm_head
    times = {}
    for n in nodes:
        embeds = torch.randn(1, n, model.config.hidden_size, device=device, dtype=dtype)
        positions = torch.arange(context, context + n, device=device)[None]
        runs = []
        for i in range(repeats + 1):
            _sync(device)
            began = time.perf_counter()
            decoder_forward(decoder, head, cache, embeds, positions, None, logits_rows=slice(None))
            _sync(device)
            if i:  # the first is a warm-up
                runs.append(time.perf_counter() - began)
            keep_cache_entries(cache, context, [])
        times[n] = sorted(runs)[len(runs) // 2]
    del cache
    return times


def time_captured(
    model, context: int, nodes, device, dtype, repeats: int, capture=None
) -> dict[int, float]:
    """Median seconds of the same forwards in the captured regime: a static cache of
    ``context + n`` entries and the forward replayed by ``capture`` (default: a CUDA graph,
    :func:`specvlm.tools.static_forward.graph_captured`)."""
    from specvlm.tools import static_forward as sf

    capture = capture or sf.graph_captured
    times = {}
    for n in nodes:
        call = sf.static_forward(model.model, model.lm_head, context, n, device, dtype)
        times[n] = sf.median_seconds(capture(call, device), device, repeats)
        del call
    return times


def _rows(
    name: str, spec: tuple, model, times: dict, context: int, dtype, regime: str = "eager"
) -> list[dict]:
    import torch

    params = sum(p.numel() for p in model.parameters())
    common = dict(
        model=name,
        role=ROLES[name],
        params=params,
        layers=spec[2],
        heads=spec[3],
        kv_heads=spec[4],
        head_dim=spec[0] // spec[3],
        bytes_per_param=torch.empty((), dtype=dtype).element_size(),
        context=context,
        regime=regime,
    )
    return [dict(common, tokens=n, seconds=seconds) for n, seconds in times.items()]


def measure_model(name: str, spec: tuple, device, dtype, contexts, repeats: int) -> list[dict]:
    """One model's rows: eager at every context, then captured (CUDA only); a capture that
    fails leaves one row with its ``error`` (the eager rows stand)."""
    import torch

    from specvlm.tools.common import one_line

    model = build_decoder(spec, device, dtype)
    rows = []
    for context in contexts:
        times = time_forwards(model, context, NODES, device, dtype, repeats)
        rows += _rows(name, spec, model, times, context, dtype)
    if device.type == "cuda":
        try:
            for context in contexts:
                times = time_captured(model, context, NODES, device, dtype, repeats)
                rows += _rows(name, spec, model, times, context, dtype, "captured")
        except Exception as err:  # noqa: BLE001 (recorded for the page)
            rows.append(dict(model=name, role=ROLES[name], regime="captured", error=one_line(err)))
        torch.cuda.empty_cache()
    del model
    return rows


def run(out: Path, tiny: bool) -> tuple[str, list[str]]:
    import torch

    device = step_device(tiny)
    if device.type == "cpu":
        torch.set_num_threads(1)  # tiny models: far faster on one thread (CONTRIBUTING.md)
    specs = TINY_DECODERS if tiny else DECODERS
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    contexts = CONTEXTS["tiny" if tiny else "gpu"]
    rows = []
    with torch.no_grad():
        for name, spec in specs.items():
            rows += measure_model(name, spec, device, dtype, contexts, 3 if tiny else 5)
            # written after each model: a step cut short keeps the models it finished
            (out / "decoders.json").write_text(json.dumps(rows, indent=2))
    return summary(rows, device), ["decoders.json"]


def summary(rows: list[dict], device) -> str:
    """The step's one line: forwards timed in each regime, and what was not."""
    eager = sum(1 for r in rows if r.get("regime") == "eager")
    captured = sum(1 for r in rows if r.get("regime") == "captured" and "seconds" in r)
    failed = sorted({r["model"] for r in rows if "error" in r})
    text = f"{eager} eager and {captured} captured forwards timed"
    if device.type != "cuda":
        text += " (captured: not run, no CUDA device)"
    return text + (f"; capture failed for {', '.join(failed)}" if failed else "")
