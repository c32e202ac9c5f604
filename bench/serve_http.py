"""Decode speed over HTTP, as a user serves: ``specvlm serve micro`` (the target alone) against
``specvlm serve micro --draft micro`` (SpecVLM), both started with their defaults and running at
once on two ports, asked the same questions with the ``openai`` client; each round runs the
target alone, then SpecVLM, so that both see the same load over the run. Run in the vLLM
environment made by scripts/test_vllm.sh::

    .venv-vllm/bin/python bench/serve_http.py --out docs/bench/serve_http.json

Requests: held-out caption questions of the embedded pair on 60-frame clips (961 video tokens)
or 8-frame clips (``--frames 8``: 129), as ``data:`` URLs, greedy, streamed, stopping at the
answer's end (8-13 tokens). Every request has a clip of its own: a video sent again would come
from vLLM's prefix cache, unscored in its prefill (``docs/serving.md``, limits), so each level
measures first-time videos.
Per request, decode time is from its first streamed token to its
last, over the tokens after the first; a level's decode tok/s is those tokens summed over its
requests over that time summed (1 request), or over the wall time from the first request's first
token to the last request's last token (concurrent requests). Acceptance comes from the
server's ``/metrics`` (accepted over drafted tokens, this run's requests only). The numbers are
medians over ``--rounds`` rounds; the machine, and every per-round number, are in the JSON.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.test_serve_http import _healthy, _spec_counts  # noqa: E402

SERVERS = {"target": [], "specvlm": ["--draft", "micro"]}


def _start(name: str, port: int, log_dir: str, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "specvlm.tools.cli", "serve", "micro", "--port", str(port)]
    log = open(os.path.join(log_dir, f"{name}.log"), "w")
    env = {**os.environ, "VLLM_PLUGINS": "specvlm"}
    return subprocess.Popen(
        command + SERVERS[name] + extra, stdout=log, stderr=subprocess.STDOUT, env=env
    )


def _wait(url: str, process: subprocess.Popen, timeout_s: float) -> float:
    start = time.monotonic()
    while not _healthy(url):
        if process.poll() is not None or time.monotonic() - start > timeout_s:
            raise RuntimeError(f"the server at {url} did not start")
        time.sleep(2)
    return time.monotonic() - start


def _clips(frames: int, count: int) -> list[tuple[str, str]]:
    """(data URL, question) of ``count`` held-out caption clips."""
    from specvlm.micro.clip_file import write_video
    from specvlm.micro.data import eval_examples

    out = []
    with tempfile.TemporaryDirectory() as directory:
        for i, (_, _, video, question, _) in enumerate(
            eval_examples(count, ("caption",), frames=frames)
        ):
            path = os.path.join(directory, f"{i}.mp4")
            write_video(path, video)
            with open(path, "rb") as f:
                out.append(
                    ("data:video/mp4;base64," + base64.b64encode(f.read()).decode(), question)
                )
    return out


def _stream(client, clip: tuple[str, str]) -> dict:
    """One streamed greedy answer: token arrival times."""
    url, question = clip
    content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": question}]
    sent = time.perf_counter()
    stamps = []
    chunks = client.chat.completions.create(
        model="micro",
        messages=[{"role": "user", "content": content}],
        temperature=0,
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    tokens = 0
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return dict(sent=sent, first=stamps[0], last=stamps[-1], tokens=tokens)


def _level(client, clips, concurrency: int) -> dict:
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(lambda c: _stream(client, c), clips[:concurrency]))
    decoded = sum(r["tokens"] - 1 for r in done)
    if concurrency == 1:
        span = sum(r["last"] - r["first"] for r in done)
    else:
        span = max(r["last"] for r in done) - min(r["first"] for r in done)
    wall = max(r["last"] for r in done) - min(r["sent"] for r in done)
    return dict(
        decode_tok_s=decoded / span if span > 0 else None,
        tok_s=sum(r["tokens"] for r in done) / wall,
        ttft_ms=statistics.mean(r["first"] - r["sent"] for r in done) * 1e3,
        tokens=[r["tokens"] for r in done],
    )


def _round(clients: dict, clips, levels) -> dict:
    """Each level on 4 requests (4 at a time, or one after another), on clips no server has seen:
    a repeated video would come from vLLM's prefix cache, unscored."""
    out = {}
    for name, client in clients.items():
        out[name] = {}
        start = 0
        for level in levels:
            runs = []
            for _ in range(max(1, 4 // level)):
                runs.append(_level(client, clips[start : start + level], level))
                start += level
            out[name][level] = dict(
                decode_tok_s=statistics.median(r["decode_tok_s"] for r in runs),
                tok_s=statistics.median(r["tok_s"] for r in runs),
                ttft_ms=statistics.median(r["ttft_ms"] for r in runs),
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60, help="frames per clip (60: 961 tokens)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4], help="concurrency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the results here (JSON)")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    from openai import OpenAI

    ports = {"target": 8311, "specvlm": 8312}
    log_dir = tempfile.mkdtemp(prefix="serve_http_")
    processes = {n: _start(n, p, log_dir, args.server_args) for n, p in ports.items()}
    try:
        urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
        startup = {n: _wait(urls[n], processes[n], 900) for n in ports}
        clients = {
            n: OpenAI(base_url=f"{u}/v1", api_key="none", timeout=300) for n, u in urls.items()
        }
        per_round = sum(level * max(1, 4 // level) for level in args.levels)
        warm = 1 + max(args.levels)
        clips = _clips(args.frames, warm + args.rounds * per_round)
        for client in clients.values():  # warm-up
            _level(client, clips[:1], 1)
            _level(client, clips[1:warm], max(args.levels))
        before = _spec_counts(urls["specvlm"])
        rounds = [
            _round(clients, clips[warm + r * per_round : warm + (r + 1) * per_round], args.levels)
            for r in range(args.rounds)
        ]
        after = _spec_counts(urls["specvlm"])
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=120)
    summary = _summary(rounds, args.levels)
    drafted = after.get("draft", 0) - before.get("draft", 0)
    accepted = after.get("accepted", 0) - before.get("accepted", 0)
    result = dict(
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        frames=args.frames,
        video_tokens=args.frames * 16 + 1,
        server_args=args.server_args,
        startup_s=startup,
        acceptance=accepted / drafted if drafted else None,
        summary=summary,
        rounds=rounds,
        logs=log_dir,
    )
    print(json.dumps(dict(summary=summary, acceptance=result["acceptance"]), indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def _summary(rounds: list[dict], levels) -> dict:
    out = {}
    for level in levels:
        row = {}
        for metric in ("decode_tok_s", "tok_s", "ttft_ms"):
            for name in SERVERS:
                row[f"{name}_{metric}"] = statistics.median(r[name][level][metric] for r in rounds)
        row["decode_speedup"] = row["specvlm_decode_tok_s"] / row["target_decode_tok_s"]
        row["tok_s_speedup"] = row["specvlm_tok_s"] / row["target_tok_s"]
        row["per_round_decode_speedup"] = [
            r["specvlm"][level]["decode_tok_s"] / r["target"][level]["decode_tok_s"] for r in rounds
        ]
        out[str(level)] = row
    return out


if __name__ == "__main__":
    sys.exit(main())
