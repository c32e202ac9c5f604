"""A decoder forward in the captured regime, for measuring it: a static KV cache and static
inputs, so the same forward can be replayed as a CUDA graph or compiled once.

:func:`static_forward` builds one forward of ``tokens`` new tokens over ``context`` cached ones
(random keys and values) as a call with no arguments; each call first sets the cache's length
back to ``context``, so a replay measures the same forward again. :func:`graph_captured` (CUDA)
and :func:`compiled` (any device) turn it into the captured regime; :func:`median_seconds` times
a call. Used by the GPU report's decoders step and by ``bench/fixed_cost.py`` (the CPU
calibration of :mod:`specvlm.tools.fixed_costs`); the library's own captured draft steps live
elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def static_forward(decoder, head, context: int, tokens: int, device, dtype) -> Callable:
    """One forward of ``tokens`` new tokens (random embeddings) over ``context`` random cache
    entries of a transformers static cache; returns a call giving the logits of every row."""
    import torch
    from transformers import StaticCache

    from specvlm.decoder import cache_argument_name

    cfg = decoder.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    cache = StaticCache(config=cfg, max_cache_len=context + tokens)
    shape = (1, cfg.num_key_value_heads, context, head_dim)
    for layer in range(cfg.num_hidden_layers):
        keys = torch.randn(shape, device=device, dtype=dtype)
        cache.update(keys, torch.randn_like(keys), layer)
    embeds = torch.randn(1, tokens, cfg.hidden_size, device=device, dtype=dtype)
    positions = torch.arange(context, context + tokens, device=device)[None]
    # a prepared 4D mask is used as given (no mask building inside the captured forward)
    mask = torch.zeros(1, 1, tokens, context + tokens, device=device, dtype=dtype)
    mask[..., context:] = torch.full((tokens, tokens), torch.finfo(dtype).min).triu(1)
    lengths = [layer.cumulative_length for layer in cache.layers]
    name = cache_argument_name(decoder)

    def call():
        for length in lengths:
            length.fill_(context)
        out = decoder(
            inputs_embeds=embeds,
            position_ids=positions,
            attention_mask=mask,
            use_cache=True,
            **{name: cache},
        )
        return head(out.last_hidden_state)

    call.cache = cache  # kept alive with the call
    return call


def graph_captured(call: Callable, device) -> Callable:
    """``call`` captured in a CUDA graph after two warm-up calls on a side stream; returns the
    replay (one call of the captured regime)."""
    import torch

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            call()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()

    def replay():
        graph.replay()

    replay.graph = graph
    return replay


def compiled(call: Callable, device) -> Callable:
    """``call`` through ``torch.compile`` (on CUDA ``mode="reduce-overhead"``: CUDA graphs),
    compiled by two warm-up calls."""
    import torch

    mode = "reduce-overhead" if device.type == "cuda" else None
    fast = torch.compile(call, mode=mode)
    for _ in range(2):
        fast()
    return fast


def median_seconds(call: Callable, device, repeats: int) -> float:
    """Median wall time of ``call`` over ``repeats`` runs after one warm-up, the device's work
    finished in each."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    runs = []
    for i in range(repeats + 1):
        sync()
        began = time.perf_counter()
        call()
        sync()
        if i:
            runs.append(time.perf_counter() - began)
    return sorted(runs)[len(runs) // 2]
