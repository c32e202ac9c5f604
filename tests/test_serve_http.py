"""`specvlm serve` over HTTP, as a user runs it: the embedded micro pair served by vLLM's
OpenAI-compatible server with the SpecVLM draft, against the same target served alone, through
the ``openai`` client with ``video_url`` (file and data URLs), streaming, 8 concurrent requests
and bad requests. Greedy answers must be the target's, token for token.

The servers are started with ``specvlm serve`` on 127.0.0.1 exactly as docs/serving.md shows,
with ``VLLM_PLUGINS=specvlm``: only the package's own vLLM plugin loads (not the tests' one), as
in a plain install. Run by scripts/test_vllm.sh in .venv-vllm; every wait is bounded.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

if os.environ.get("SPECVLM_REQUIRE_VLLM") == "1":  # scripts/test_vllm.sh: never skipped there
    import av  # noqa: F401  (specvlm.micro.clip_file writes the videos with it)
    import openai
    import vllm  # noqa: F401
else:
    openai = pytest.importorskip("openai")
    pytest.importorskip("av")
    pytest.importorskip("vllm")

REQUESTS = 56  # greedy requests compared between the two servers (at least 50)
LONG = 4  # of which on 60-frame clips (961 video tokens)
CONCURRENCY = 8
START_TIMEOUT_S = 600  # a server's start on a loaded 2-core machine (about 1-3 minutes)
REQUEST_TIMEOUT_S = 120
SERVER_OPTIONS = ["--enforce-eager", "--max-num-seqs", "8", "--kv-cache-memory-bytes", "268435456"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unhidden_environment() -> dict:
    """This process's environment without scripts/test_vllm.sh's hiding: `specvlm serve` finds
    the packages that cannot load itself, as for a user."""
    from specvlm.vllm_plugin.server import HIDE_ENV, SITE_DIR

    env = {k: v for k, v in os.environ.items() if k != HIDE_ENV}
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != SITE_DIR]
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path)
    else:
        env.pop("PYTHONPATH", None)
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def _server(media_dir: str, log_path: str, draft: bool):
    """``specvlm serve micro [--draft micro]`` on a free port; yields (base URL, first lines)."""
    port = _free_port()
    command = [sys.executable, "-m", "specvlm.tools.cli", "serve", "micro", "--port", str(port)]
    command += (["--draft", "micro"] if draft else []) + SERVER_OPTIONS
    command += ["--allowed-local-media-path", media_dir]
    env = {**_unhidden_environment(), "VLLM_PLUGINS": "specvlm"}
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    log = open(log_path, "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = open(log_path).read()[-3000:]
                pytest.fail(f"specvlm serve did not start (exit {process.poll()}):\n{tail}")
            time.sleep(2)
        with open(log_path) as f:
            yield url, f.read(2000)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _requests(media_dir: str) -> list[dict]:
    """Held-out questions on clips written as mp4 files; every other one sent as a data URL."""
    from specvlm.micro.clip_file import write_video
    from specvlm.micro.data import eval_examples

    examples = eval_examples(-(-(REQUESTS - LONG) // 5), frames=8)[: REQUESTS - LONG]
    examples += eval_examples(LONG, ("caption",), frames=60)  # caption answers fit 60 frames
    out = []
    for i, (_, _, video, question, _) in enumerate(examples):
        path = os.path.join(media_dir, f"clip{i}.mp4")
        write_video(path, video)
        if i % 2:
            with open(path, "rb") as f:
                url = "data:video/mp4;base64," + base64.b64encode(f.read()).decode()
        else:
            url = "file://" + path
        out.append({"video": url, "question": question, "frames": len(video)})
    return out


def _messages(question: str, *media: dict) -> list[dict]:
    return [{"role": "user", "content": [*media, {"type": "text", "text": question}]}]


def _video(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def _client(url: str):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", timeout=REQUEST_TIMEOUT_S)


def _ask(client, messages, max_tokens: int = 24, **kwargs) -> tuple:
    """A greedy answer: (text, finish reason, completion tokens, token strings)."""
    model = client.models.list().data[0].id
    response = client.chat.completions.create(
        model=model,
        messages=messages,
        temperature=0,
        max_tokens=max_tokens,
        logprobs=True,
        **kwargs,
    )
    choice = response.choices[0]
    tokens = tuple(t.token for t in choice.logprobs.content)
    return choice.message.content, choice.finish_reason, response.usage.completion_tokens, tokens


def _stream(client, messages, max_tokens: int = 24) -> str:
    model = client.models.list().data[0].id
    chunks = client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=max_tokens, stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def _status(client, messages, **kwargs):
    """The HTTP status of a request that may be refused (200 with the answer, or the error)."""
    try:
        return 200, _ask(client, messages, **kwargs)
    except openai.APIStatusError as err:
        return err.status_code, None


def _spec_counts(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts = {}
    for line in text.splitlines():
        for name in ("accepted", "draft"):
            if line.startswith(f"vllm:spec_decode_num_{name}_tokens_total"):
                counts[name] = float(line.rsplit(" ", 1)[1])
    return counts


def _bad_requests(media_dir: str, good_url: str) -> dict:
    corrupt = os.path.join(media_dir, "corrupt.mp4")
    with open(corrupt, "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    image = base64.b64encode(_png()).decode()
    return {
        "no video": (_messages("what colour is the triangle ?"), {}),
        "two videos": (_messages("how many shapes ?", _video(good_url), _video(good_url)), {}),
        "an image": (
            _messages(
                "what is it ?",
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
            ),
            {},
        ),
        "a corrupt mp4": (_messages("what is it ?", _video("file://" + corrupt)), {}),
        "max_tokens 100000": (_messages("what is it ?", _video(good_url)), {"max_tokens": 100000}),
    }


def _png() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _serve_all(url: str, requests: list[dict], media_dir: str) -> dict:
    """Everything the tests compare, from one server."""
    client = _client(url)
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(
            pool.map(lambda r: _ask(client, _messages(r["question"], _video(r["video"]))), requests)
        )
    streamed = [_stream(client, _messages(r["question"], _video(r["video"]))) for r in requests[:4]]
    bad = {
        name: _status(client, messages, **kwargs)
        for name, (messages, kwargs) in _bad_requests(media_dir, requests[0]["video"]).items()
    }
    _drop_a_streaming_client(client, requests[1])
    after = _ask(client, _messages(requests[2]["question"], _video(requests[2]["video"])))
    return dict(
        answers=answers,
        streamed=streamed,
        bad=bad,
        healthy=_healthy(url),
        after=after,
        counts=_spec_counts(url),
    )


def _drop_a_streaming_client(client, request: dict) -> None:
    """A client that goes away after the first streamed chunk."""
    model = client.models.list().data[0].id
    chunks = client.chat.completions.create(
        model=model,
        messages=_messages(request["question"], _video(request["video"])),
        temperature=0,
        max_tokens=24,
        stream=True,
    )
    next(iter(chunks))
    chunks.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    media_dir = str(tmp_path_factory.mktemp("media"))
    logs = tmp_path_factory.mktemp("logs")
    requests = _requests(media_dir)
    results = {}
    for name, draft in (("target", False), ("specvlm", True)):
        with _server(media_dir, str(logs / f"{name}.log"), draft) as (url, banner):
            results[name] = _serve_all(url, requests, media_dir)
            results[name]["banner"] = banner
    results["requests"] = requests
    return results


def test_greedy_answers_over_http_are_the_target_served_alone(served):
    target, ours = served["target"]["answers"], served["specvlm"]["answers"]
    assert len(ours) == REQUESTS >= 50
    mismatches = [i for i, (a, b) in enumerate(zip(target, ours, strict=True)) if a != b]
    shown = [(served["requests"][i]["question"], target[i], ours[i]) for i in mismatches]
    assert mismatches == [], shown
    assert all(text and reason in ("stop", "length") for text, reason, _, _ in ours)
    assert sum(r["frames"] == 60 for r in served["requests"]) == LONG


def test_the_draft_is_used_and_acceptance_is_read_from_metrics(served):
    counts = served["specvlm"]["counts"]
    assert counts["draft"] > 0 and 0 < counts["accepted"] <= counts["draft"]
    assert served["target"]["counts"].get("draft", 0) == 0


def test_streamed_answers_equal_the_whole_answers(served):
    for name in ("target", "specvlm"):
        whole = [text for text, _, _, _ in served[name]["answers"][:4]]
        assert served[name]["streamed"] == whole


def test_bad_requests_are_answered_as_the_target_alone_answers_them(served):
    target, ours = served["target"]["bad"], served["specvlm"]["bad"]
    assert ours == target
    assert ours["no video"][0] == 200  # text only: decoded by the target alone
    assert ours["max_tokens 100000"][0] == 400
    assert 400 <= ours["a corrupt mp4"][0] < 500


def test_the_server_stays_healthy_after_bad_requests_and_dropped_clients(served):
    for name in ("target", "specvlm"):
        assert served[name]["healthy"]
    assert served["specvlm"]["after"] == served["target"]["after"]
    assert served["specvlm"]["after"] == served["specvlm"]["answers"][2]


def test_the_server_prints_its_url_and_where_acceptance_is_read(served):
    banner = served["specvlm"]["banner"]
    assert "OpenAI API at http://127.0.0.1:" in banner and "/metrics" in banner
    assert "the target alone" in served["target"]["banner"]
