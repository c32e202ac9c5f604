"""Overlapped drafting (``accelerate(overlap=...)``, :mod:`specvlm.overlap`): the output is the
target's, token for token under greedy decoding and by distribution under sampling, whether the
looked-ahead trees are used (hits) or thrown away (misses); the look-ahead's bookkeeping on toy
trees; the option's validation and the worker's error handling."""

from __future__ import annotations

import collections
from types import SimpleNamespace

import pytest
import torch

import specvlm
from specvlm import lookahead_gate, overlap
from specvlm.draft_worker import DraftWorker, DraftWorkers
from specvlm.drafting import EMPTY, Proposal
from specvlm.lookahead_gate import LookaheadGate
from specvlm.trees import Tree
from specvlm.verify import Verdict
from tests import tiny_models as tm
from tests.test_sampler import g_test

pytestmark = pytest.mark.usefixtures("one_thread", "reference_kernels")

TREE = [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]
# noise on the noisy copy's LM head, relative to its weights' spread: bets both hit and miss
NOISE = {"llava_onevision": 0.6, "qwen2_5_vl": 0.2, "qwen3_vl": 0.2}
_PAIRS: dict = {}


def _pair(family):
    """(target, random draft, noisy copy draft, inputs)."""
    if family not in _PAIRS:
        target, draft = tm.make_pair(family)
        noisy = tm.make_copy_draft(target)
        gen = torch.Generator().manual_seed(11)
        with torch.no_grad():
            head = noisy.lm_head.weight
            head.add_(torch.randn(head.shape, generator=gen) * head.std() * NOISE[family])
        _PAIRS[family] = (target, draft, noisy, tm.make_inputs(family, target))
    return _PAIRS[family]


def _greedy(model_or_sd, inputs, n):
    return model_or_sd.generate(**inputs, do_sample=False, max_new_tokens=n)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_greedy_output_is_the_targets_with_hits_and_misses(family):
    """A random draft (misses), a copy of the target on every video token (hits) and a noisy
    copy on a pruned video (both): every output is the target's own."""
    target, draft, noisy, inputs = _pair(family)
    expected = _greedy(target, inputs, 14)
    steps = hits = 0
    for candidate, drop_rate in ((draft, 0.5), (tm.make_copy_draft(target), 0.0), (noisy, 0.5)):
        sd = specvlm.accelerate((target, candidate), drop_rate=drop_rate, tree=TREE, overlap=True)
        assert torch.equal(_greedy(sd, inputs, 14), expected)
        stats = sd.last_stats
        assert stats.overlapped and stats.overlap_reason.startswith("overlap=True; look-ahead")
        steps += stats.lookahead_steps
        hits += stats.lookahead_hits
        assert 0.0 <= stats.lookahead_used <= 1.0
    assert hits > 0, "no looked-ahead tree was ever used: the hit path is untested"
    assert steps > hits, "every look-ahead hit: the roll-back path is untested"


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_a_feature_selector_reads_the_workers_draft_inputs(family):
    """With overlap the draft's decoder inputs come from the worker; a feature selector reads
    them before the draft's prefill, which reuses them: the output is the target's, and the
    kept tokens are the ones the same selector keeps without overlap."""
    target, _, noisy, inputs = _pair(family)
    expected = _greedy(target, inputs, 10)
    kept = []
    for overlapped in (True, False):
        sd = specvlm.accelerate(
            (target, noisy), drop_rate=0.5, tree=TREE, selector="semantic", overlap=overlapped
        )
        assert torch.equal(_greedy(sd, inputs, 10), expected)
        assert sd.last_stats.overlapped == overlapped
        kept.append(sd.last_stats.kept_indices)
    assert torch.equal(kept[0], kept[1])


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_every_bet_of_an_exact_copy_hits(family):
    """A draft equal to the target on every video token agrees with it everywhere, so every
    bet hits: a slip in the draft's cache or positions after a look-ahead would show here as
    misses (the output alone cannot show it: the target verifies anyway)."""
    target, _, _, inputs = _pair(family)
    copy = tm.make_copy_draft(target)
    for tree in (TREE, [[0], [1]], [[0], [0, 0], [0, 0, 0]]):
        sd = specvlm.accelerate((target, copy), drop_rate=0.0, tree=tree, overlap=True)
        assert torch.equal(_greedy(sd, inputs, 20), _greedy(target, inputs, 20))
        stats = sd.last_stats
        assert stats.lookahead_steps >= 3
        assert stats.lookahead_hits == stats.lookahead_steps


def test_a_wrong_hit_rule_is_caught(monkeypatch):
    """Using a looked-ahead tree whatever the verdict (a wrong scheme) changes the output, and
    the greedy comparison above would see it."""
    target, _, noisy, inputs = _pair("llava_onevision")
    expected = _greedy(target, inputs, 14)
    monkeypatch.setattr(overlap.Ahead, "hit", lambda self, accepted, bonus: True)
    sd = specvlm.accelerate((target, noisy), drop_rate=0.5, tree=TREE, overlap=True)
    assert not torch.equal(_greedy(sd, inputs, 14), expected)


def test_captured_steps_overlap():
    """The draft's captured steps run on the worker."""
    target, _, noisy, inputs = _pair("qwen2_5_vl")
    sd = specvlm.accelerate((target, noisy), drop_rate=0.5, tree=TREE, overlap=True, capture=True)
    assert torch.equal(_greedy(sd, inputs, 10), _greedy(target, inputs, 10))
    assert sd.last_stats.captured and sd.last_stats.lookahead_steps > 0


def test_overlap_off_and_auto_on_a_cpu():
    target, draft, _, inputs = _pair("llava_onevision")
    for setting, reason in ((False, "overlap=False"), ("auto", "auto: a model is on the CPU")):
        sd = specvlm.accelerate((target, draft), drop_rate=0.5, tree=TREE, overlap=setting)
        _greedy(sd, inputs, 6)
        assert not sd.last_stats.overlapped
        assert sd.last_stats.overlap_reason.startswith(reason)
        assert sd.last_stats.lookahead_steps == 0


@pytest.mark.parametrize("value", ["yes", 1, None, "True"])
def test_bad_overlap_values_are_refused(value):
    target, draft, _, _ = _pair("llava_onevision")
    with pytest.raises(ValueError, match="overlap must be 'auto', True or False"):
        specvlm.accelerate((target, draft), overlap=value)


# -------------------------------------------------------------------------------------------
# Sampling: the first NEW tokens follow the target's law, look-ahead running
# -------------------------------------------------------------------------------------------
NEW = 4
OPTIONS = dict(do_sample=True, temperature=0.8, top_k=2)
SAMPLE_TREE = [[0], [1]]  # depth 1: a look-ahead fits in NEW tokens


def _law(target, inputs):
    from tests import test_sampling_distribution as tsd

    return tsd.exact_law(target, inputs, NEW, OPTIONS)


@pytest.mark.parametrize(
    "family,children", [(f, "top_k") for f in tm.FAMILIES] + [("llava_onevision", "sampled")]
)
def test_sampled_tokens_follow_the_target(family, children):
    target, _, noisy, _ = _pair(family)
    inputs = tm.make_inputs(family, target, seed=3, frames=2)
    # the tiny Qwen drafts agree with their targets on no pruned video: their bets miss always
    drop_rate = 0.5 if family == "llava_onevision" else 0.0
    sd = specvlm.accelerate(
        (target, noisy), drop_rate=drop_rate, tree=SAMPLE_TREE, children=children, overlap=True
    )
    gen = torch.Generator().manual_seed(2)
    start = inputs["input_ids"].shape[1]
    counts: collections.Counter = collections.Counter()
    hits = steps = 0
    for _ in range(600):
        out = sd.generate(**inputs, max_new_tokens=NEW, generator=gen, **OPTIONS)
        counts[tuple(out[0, start:].tolist())] += 1
        hits += sd.last_stats.lookahead_hits
        steps += sd.last_stats.lookahead_steps
    assert hits > 20 and steps - hits > 20, f"hits {hits} of {steps}: a path untested"
    p_value = g_test(counts, _law(target, inputs))
    assert p_value > 1e-3, f"overlap/{family}/{children}: G-test p = {p_value:.2e}"


@pytest.mark.parametrize("gated", [False, True])
def test_seeded_sampling_repeats(gated):
    """Each tree's sampled children are drawn with a seed of their own, the same whether the
    tree was bet on or drafted after a miss: the same seed gives the same tokens, also when
    the gate's (timing-driven) choices differ from call to call."""
    target, _, noisy, inputs = _pair("qwen2_5_vl")
    sd = specvlm.accelerate(
        (target, noisy), drop_rate=0.0, tree=TREE, children="sampled", overlap=True
    )
    if gated:
        flips = iter([True, False] * 100)
        sd._lookahead_gate.look_ahead = lambda: next(flips)
    outs = [
        sd.generate(**inputs, max_new_tokens=10, generator=torch.Generator().manual_seed(4),
                    **OPTIONS)
        for _ in range(3)
    ]  # fmt: skip
    assert all(torch.equal(outs[0], o) for o in outs[1:])


# -------------------------------------------------------------------------------------------
# Bookkeeping on toy trees
# -------------------------------------------------------------------------------------------
def _proposal(paths, tokens, prefix_len=10):
    tree = Tree.from_paths(paths)
    return Proposal(tree, tokens, prefix_len, torch.tensor([7]))


def test_the_guess_is_the_rank0_chain():
    p = _proposal([[0], [1], [0, 0], [1, 0], [0, 0, 0], [0, 0, 1]], [5, 6, 7, 8, 9, 10])
    guess = overlap.guess_of(p, frozenset(), room=10)
    assert guess.nodes == [0, 2, 4] and guess.tokens == [5, 7, 9] and guess.fed == 2
    assert overlap.guess_of(p, frozenset({7}), room=10) is None  # a stop token on the path
    assert overlap.guess_of(p, frozenset(), room=4) is None  # path + bonus fill the room
    assert overlap.guess_of(p, frozenset(), room=5) is not None
    empty = _proposal([[0], [0, 0]], [5, EMPTY])
    assert overlap.guess_of(empty, frozenset(), room=10) is None


def test_a_guess_without_a_rank0_chain_takes_the_first_deepest_node():
    p = _proposal([[0], [1], [1, 2]], [5, 6, 7])
    assert overlap.guess_of(p, frozenset(), room=10).nodes == [1, 2]


class _FakeSide:
    def __init__(self):
        self.kept = None
        self.next_pos = None

    def keep(self, start, offsets):
        self.kept = (start, list(offsets))


@pytest.mark.parametrize(
    "accepted,bonus,kept,pending",
    [
        ([], 42, [], [42]),  # nothing accepted: the bonus alone
        ([0], 42, [0], [42]),  # the guess's first node
        ([0, 2], 42, [0, 1], [42]),  # ... and its second (at offset 1 after the roll-back)
        ([0, 2, 4], 42, [0, 1, 2], [42]),  # the whole path, another bonus: the leaf was fed
        ([0, 3], 42, [0], [8, 42]),  # diverged at depth 2: node 3's token is re-fed
        ([1, 3], 42, [], [6, 8, 42]),
    ],
)
def test_roll_back_after_a_miss(accepted, bonus, kept, pending):
    p = _proposal([[0], [1], [0, 0], [1, 0], [0, 0, 0]], [5, 6, 7, 8, 9])
    guess = overlap.guess_of(p, frozenset(), room=10)
    ahead = overlap.Ahead(guess, bonus=99, proposal=p, seconds=0.0)
    side = _FakeSide()
    run = SimpleNamespace(draft=side)
    got = overlap.resume_pending(run, p, Verdict(accepted, bonus), ahead)
    assert side.kept == (10, kept) and got == pending
    assert int(side.next_pos) == 7 + 1 + len(kept)


def test_roll_back_without_a_look_ahead_is_the_sequential_commit():
    p = _proposal([[0], [1], [0, 0], [1, 0], [0, 0, 0]], [5, 6, 7, 8, 9])
    side = _FakeSide()
    got = overlap.resume_pending(SimpleNamespace(draft=side), p, Verdict([0, 2, 4], 3), None)
    assert side.kept == (10, [0, 2]) and got == [9, 3]


def test_a_failing_job_raises_in_the_caller_and_drain_waits():
    worker = DraftWorker(torch.device("cpu"), own_stream=False)
    job = worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        worker.result(job)
    seen = []
    worker.submit(lambda: seen.append(torch.is_grad_enabled()))
    worker.drain()
    assert seen == [False]  # the job ran, without autograd, before drain returned


def test_jobs_run_under_the_callers_inference_mode_and_autocast():
    worker = DraftWorker(torch.device("cpu"), own_stream=False)

    def state():
        return torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu")

    assert worker.call(state) == (False, False)
    with torch.inference_mode():
        assert worker.call(state) == (True, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert worker.call(state) == (False, True)


def test_a_cpu_worker_lives_for_one_call():
    workers = DraftWorkers()
    cpu = torch.device("cpu")
    with workers.for_draft(cpu, own_stream=False) as first:
        job = first.submit(lambda: 7)
    assert job.done() and job.result()[0] == 7  # finished on the way out
    with workers.for_draft(cpu, own_stream=False) as second:
        assert second is not first
    with pytest.raises(RuntimeError):  # the first worker's thread has ended
        first.submit(lambda: None)


def test_generate_under_inference_mode():
    """A caller's ``torch.inference_mode()`` reaches the worker (the draft's cache tensors are
    inference tensors there too)."""
    target, _, noisy, inputs = _pair("llava_onevision")
    sd = specvlm.accelerate((target, noisy), drop_rate=0.5, tree=TREE, overlap=True)
    with torch.inference_mode():
        out = _greedy(sd, inputs, 12)
    assert torch.equal(out, _greedy(target, inputs, 12))
    assert sd.last_stats.lookahead_steps > 0


# -------------------------------------------------------------------------------------------
# The look-ahead gate (overlap="auto")
# -------------------------------------------------------------------------------------------
def _fed_gate(hit_rate: float, drafting: float, alone: float, beside: float):
    gate = LookaheadGate()
    for i in range(20):
        gate.record_step(True, beside, hit=i < hit_rate * 20)
        gate.record_step(False, alone, hit=False)
        gate.record_drafting(drafting)
    return gate


def test_the_gate_explores_both_branches_first():
    gate = LookaheadGate()
    assert all(gate.look_ahead() for _ in range(3))  # nothing known: look ahead
    for _ in range(lookahead_gate.EXPLORE):
        gate.record_step(True, 0.01, hit=False)
    assert not gate.look_ahead()  # then steps without a look-ahead, to compare


@pytest.mark.parametrize(
    "hit_rate,drafting,alone,beside,pays",
    [
        (0.5, 0.010, 0.020, 0.021, True),  # a draft GPU of its own: verification unslowed
        (0.1, 0.010, 0.020, 0.030, False),  # shared cores: verification slowed more than saved
        (0.9, 0.010, 0.020, 0.035, False),  # the draft slower than the target: waiting
        (0.9, 0.010, 0.020, 0.025, True),
    ],
)
def test_the_gate_weighs_what_a_hit_saves_against_the_slowdown(
    hit_rate, drafting, alone, beside, pays
):
    gate = _fed_gate(hit_rate, drafting, alone, beside)
    decisions = [gate.look_ahead() for _ in range(lookahead_gate.PROBE_EVERY * 2)]
    majority = sum(decisions) > len(decisions) / 2
    assert majority == pays
    assert any(d != pays for d in decisions), "the other branch is never probed"


def test_auto_gates_the_look_ahead_and_stays_lossless():
    """The gated loop (what "auto" runs where it overlaps), forced on a CPU pair: it bets
    exactly when the gate says so, and the gate does say no (after its first bets it wants
    steps without one to compare)."""
    target, draft, _, inputs = _pair("qwen3_vl")
    sd = specvlm.accelerate((target, draft), drop_rate=0.5, tree=TREE, overlap=True)
    gate = sd._lookahead_gate = LookaheadGate()
    answers = []
    real = gate.look_ahead
    gate.look_ahead = lambda: answers.append(real()) or answers[-1]
    expected = _greedy(target, inputs, 14)
    bets = 0
    for _ in range(4):
        assert torch.equal(_greedy(sd, inputs, 14), expected)
        bets += sd.last_stats.lookahead_steps
    assert bets == sum(answers) and not all(answers)


def test_the_cpu_bench_runs_on_the_embedded_pair(tmp_path):
    """bench/overlap_cpu.py, one short clip: both loops run, outputs checked, the record
    written."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "overlap_cpu.py"
    spec = importlib.util.spec_from_file_location("overlap_cpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "overlap.json"
    bench.main(["--clips", "1", "--frames", "8", "--repeats", "1", "--threads", "1",
                "--out", str(out)])  # fmt: skip
    row = json.loads(out.read_text())["by_threads"]["1"]
    assert row["decode_speedup"] > 0 and row["sequential"]["tokens"] > 0
    assert row["sequential"]["tokens"] == row["overlapped"]["tokens"]


def _on(*devices):
    """A stand-in model whose parameters live on ``devices``."""
    params = [SimpleNamespace(device=torch.device(d)) for d in devices]
    return SimpleNamespace(parameters=lambda: iter(params))


@pytest.mark.parametrize(
    "target,draft,on,reason",
    [
        (("cuda:0", "cuda:1"), ("cuda:2",), True, "auto: the draft has a GPU of its own"),
        (("cuda:0", "cuda:1"), ("cuda:1",), False, "auto: the draft shares a GPU"),
        (("cuda:0",), ("cpu",), False, "auto: a model is on the CPU"),
        (("cpu",), ("cpu",), False, "auto: a model is on the CPU"),
    ],
)
def test_what_auto_decides_by_device(target, draft, on, reason):
    got, why = overlap.decide_overlap("auto", _on(*target), _on(*draft))
    assert got is on and why.startswith(reason)
    assert overlap.decide_overlap(True, _on(*target), _on(*draft)) == (True, "overlap=True")
    assert overlap.decide_overlap(False, _on(*target), _on(*draft)) == (False, "overlap=False")


def test_auto_does_not_overlap_a_draft_that_is_the_target():
    model = _on("cuda:0")
    assert overlap.decide_overlap("auto", model, model) == (False, "auto: the draft is the target")


def test_threads_share_an_overlapped_decoder():
    """Two threads calling one overlapped decoder at once: each call has its own worker, every
    output is the target's."""
    import threading

    target, _, noisy, inputs = _pair("qwen2_5_vl")
    sd = specvlm.accelerate((target, noisy), drop_rate=0.0, tree=TREE, overlap=True)
    sd._lookahead_gate = LookaheadGate()  # shared estimates, changed under their lock
    expected = _greedy(target, inputs, 12)
    results, errors = [], []

    def calls():
        try:
            for _ in range(3):
                results.append(torch.equal(_greedy(sd, inputs, 12), expected))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=calls) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and results == [True] * 6
