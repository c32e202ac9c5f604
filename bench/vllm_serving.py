"""Tokens/s and acceptance through vLLM, the target alone against SpecVLM drafts, at 1, 4 and 8
concurrent requests with distinct videos (vLLM's CPU backend, the tiny checkpoints of
tests/vllm_support.py). Run in the vLLM environment made by scripts/test_vllm.sh:

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python bench/vllm_serving.py \\
        --out docs/bench/vllm_cpu.json

Each configuration serves every concurrency level after one warm-up batch; tokens/s is the fastest
of ``--repeats`` batches (prefill included), decode ms/token the mean over their requests of the
time from a request's first token to its last over the tokens after the first (vLLM's own
timestamps). Three pairs: ``micro`` (the embedded micro LLaVA-OneVision pair, trained:
held-out caption questions, 128 video tokens, answers of 8-13 tokens, stopping at their end;
the naive row is the same draft seeing every video token), ``small`` (the tiny target, a smaller
random draft: almost nothing is accepted, so this is the plugin's overhead) and ``agreeing`` (a
target whose video embeds constantly and a copy of it: drafts are accepted, but the draft costs as
much as the target). None is a speed claim for real checkpoints: a tiny model's forward is mostly
vLLM's per-step overhead here, which drafting multiplies.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from specvlm.vllm_plugin import engine_args  # noqa: E402
from tests import vllm_support as vs  # noqa: E402


def _tiny_batch(frames: int):
    return lambda start, count: [vs.prompt(start + i, frames=frames) for i in range(count)]


def _micro_batch(frames: int):
    # captions: the micro pair's longest answers (about 8-13 tokens), so decoding dominates
    def batch(start: int, count: int):
        requests = vs.micro_requests(count, start, types=("caption",), frames=frames)
        return [request for request, _ in requests]

    return batch


def _serve(llm, levels, repeats: int, tokens: int, batch, ignore_eos: bool = True) -> list[dict]:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=ignore_eos)
    llm.generate(batch(0, 1), params, use_tqdm=False)  # warm-up
    rows = []
    for level in levels:
        best = None
        per_token = []  # each request's decode time per token after its first, engine clock
        before = vs.spec_decode_counts(llm)
        for r in range(repeats):
            requests = batch(1000 * level + 10 * r, level)
            t0 = time.perf_counter()
            outs = llm.generate(requests, params, use_tqdm=False)
            seconds = time.perf_counter() - t0
            made = sum(len(o.outputs[0].token_ids) for o in outs)
            best = seconds if best is None else min(best, seconds)
            for o in outs:
                stats, n = o.metrics, len(o.outputs[0].token_ids)
                if stats is not None and n > 1 and stats.last_token_ts > stats.first_token_ts:
                    per_token.append((stats.last_token_ts - stats.first_token_ts) / (n - 1))
        after = vs.spec_decode_counts(llm)
        drafts = after.get("drafts", 0) - before.get("drafts", 0)
        drafted = after.get("draft_tokens", 0) - before.get("draft_tokens", 0)
        accepted = after.get("accepted_tokens", 0) - before.get("accepted_tokens", 0)
        rows.append(
            dict(
                concurrency=level,
                seconds=round(best, 4),
                tokens_per_s=round(made / best, 1),
                decode_ms_per_token=(
                    round(1e3 * sum(per_token) / len(per_token), 3) if per_token else None
                ),
                acceptance=round(accepted / drafted, 3) if drafted else None,
                mean_accepted_length=round(1 + accepted / drafts, 2) if drafts else None,
            )
        )
    return rows


def _tiny(path: str, **kwargs):
    llm = vs.engine(path, disable_log_stats=False, **kwargs)
    return llm


def _run(make, **kwargs) -> list[dict]:
    llm = make()
    try:
        return _serve(llm, **kwargs)
    finally:
        del llm
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument("--frames", type=int, default=16, help="raw frames per video")
    parser.add_argument(
        "-k", type=int, default=4, help="num_speculative_tokens (default: specvlm vllm-args')"
    )
    parser.add_argument(
        "--only",
        action="append",
        help="run only the configurations whose name contains this (repeatable)",
    )
    parser.add_argument(
        "--levels", default="1,4,8", help="concurrency levels, comma-separated (default 1,4,8)"
    )
    args = parser.parse_args()
    import torch
    import vllm

    levels = tuple(int(n) for n in args.levels.split(","))
    spec = dict(num_speculative_tokens=args.k)
    with tempfile.TemporaryDirectory() as root:
        paths = vs.write_pair(root)
        tiny = dict(levels=levels, repeats=args.repeats, tokens=args.tokens)
        tiny_batch = _tiny_batch(args.frames)
        micro = dict(levels=levels, repeats=args.repeats, tokens=24, batch=_micro_batch(8))
        # 60 frames: 961 video tokens, where pruning paid in the library's own loop
        long = dict(levels=levels, repeats=args.repeats, tokens=24, batch=_micro_batch(60))

        def micro_engine(**kwargs):
            from specvlm.tools.common import EMBEDDED

            return lambda: vs.engine(
                str(EMBEDDED / "target"),
                architecture=vs.MICRO_ARCHITECTURE,
                disable_log_stats=False,
                max_model_len=1024,
                **kwargs,
            )

        runs = {
            "micro: target alone": lambda: _run(micro_engine(), ignore_eos=False, **micro),
            "micro: SpecVLM (drop 0.9)": lambda: _run(
                micro_engine(**engine_args(draft=vs.micro_draft(), **spec)),
                ignore_eos=False,
                **micro,
            ),
            "micro: naive (drop 0)": lambda: _run(
                micro_engine(**engine_args(draft=vs.micro_draft(), drop_rate=0.0, **spec)),
                ignore_eos=False,
                **micro,
            ),
            "micro, 961 video tokens: target alone": lambda: _run(
                micro_engine(), ignore_eos=False, **long
            ),
            "micro, 961 video tokens: SpecVLM (drop 0.9)": lambda: _run(
                micro_engine(**engine_args(draft=vs.micro_draft(), **spec)),
                ignore_eos=False,
                **long,
            ),
            "micro, 961 video tokens: naive (drop 0)": lambda: _run(
                micro_engine(**engine_args(draft=vs.micro_draft(), drop_rate=0.0, **spec)),
                ignore_eos=False,
                **long,
            ),
            "small: target alone": lambda: _run(
                lambda: _tiny(paths["target"]), batch=tiny_batch, **tiny
            ),
            "small: SpecVLM (drop 0.9)": lambda: _run(
                lambda: _tiny(paths["target"], **engine_args(draft=paths["draft"], **spec)),
                batch=tiny_batch,
                **tiny,
            ),
            "agreeing: target alone": lambda: _run(
                lambda: _tiny(paths["blind"]), batch=tiny_batch, **tiny
            ),
            "agreeing: SpecVLM (drop 0.9)": lambda: _run(
                lambda: _tiny(paths["blind"], **engine_args(draft=paths["blind_copy"], **spec)),
                batch=tiny_batch,
                **tiny,
            ),
        }
        configs = {
            name: run()
            for name, run in runs.items()
            if not args.only or any(part in name for part in args.only)
        }
    result = dict(
        hardware=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (CPU only)",
        versions=dict(vllm=vllm.__version__, torch=torch.__version__),
        tiny_video_tokens=args.frames // 2 * 16,
        micro_video_tokens="129 (8 frames) and 961 (60 frames)",
        tiny_new_tokens=args.tokens,
        micro_new_tokens="up to 16 (the answer)",
        num_speculative_tokens=args.k,
        configs=configs,
    )
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
