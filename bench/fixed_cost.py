"""Measure the fixed cost per layer of a decode forward in both regimes on this machine, with the
embedded micro pair: writes the record :mod:`specvlm.tools.fixed_costs` reads.

    PYTHONPATH=. python bench/fixed_cost.py [--out docs/bench/fixed_costs.json] [--context 32]
        [--repeats 50] [--rounds 3]

For each model of the pair, a one-token decode forward over ``--context`` cached tokens:

* **eager**: the library's decoder call on a dynamic cache (cut back after each forward), as
  the decoding loops run it;
* **static**: the same forward on a static cache, uncompiled (what capture changes by itself);
* **captured**: that static forward through ``torch.compile`` (on this CPU: Inductor's C++
  kernels; on CUDA it would be ``mode="reduce-overhead"``, CUDA graphs).

Each is the median of ``--repeats`` calls, the fastest of ``--rounds`` alternating rounds (the
machine is shared); per layer = the forward over the model's layers, as the perf model charges
its fixed cost.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
import transformers

from specvlm.decoder import decoder_forward, keep_cache_entries, new_cache
from specvlm.tools.common import EMBEDDED, hardware, load_pair
from specvlm.tools.static_forward import compiled, median_seconds, static_forward

REGIMES = ("eager", "static", "captured")


def eager_call(decoder, head, context: int):
    """The library's decoder call of one token over ``context`` dynamic-cache entries."""
    cfg = decoder.config
    cache = new_cache()
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    for layer in range(cfg.num_hidden_layers):
        keys = torch.randn(1, cfg.num_key_value_heads, context, head_dim)
        cache.update(keys, torch.randn_like(keys), layer)
    embeds = torch.randn(1, 1, cfg.hidden_size)
    positions = torch.tensor([[context]])

    def call():
        logits = decoder_forward(
            decoder, head, cache, embeds, positions, None, logits_rows=slice(None)
        )
        keep_cache_entries(cache, context, [])
        return logits

    return call


def measure(model, context: int, repeats: int, rounds: int) -> dict:
    decoder, head = model.model.language_model, model.lm_head
    cpu = torch.device("cpu")
    calls = {
        "eager": eager_call(decoder, head, context),
        "static": static_forward(decoder, head, context, 1, cpu, torch.float32),
    }
    calls["captured"] = compiled(static_forward(decoder, head, context, 1, cpu, torch.float32), cpu)
    best = {regime: float("inf") for regime in REGIMES}
    for _ in range(rounds):
        for regime in REGIMES:
            best[regime] = min(best[regime], median_seconds(calls[regime], cpu, repeats))
    return {f"{regime}_s": seconds for regime, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/bench/fixed_costs.json"))
    parser.add_argument("--context", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    pair = load_pair(str(EMBEDDED / "target"), str(EMBEDDED / "draft"), cpu)
    rows = []
    with torch.no_grad():
        for role, model in zip(("target", "draft"), pair, strict=True):
            cfg = model.model.language_model.config
            row = dict(model=f"micro {role}", layers=cfg.num_hidden_layers, hidden=cfg.hidden_size)
            row.update(measure(model, args.context, args.repeats, args.rounds))
            rows.append(row)
            print({k: f"{v * 1e6:.0f} us" if k.endswith("_s") else v for k, v in row.items()})
    record = dict(
        hardware=hardware(cpu),
        machine=platform.processor() or platform.machine(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        context=args.context,
        tokens=1,
        models=rows,
    )
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
