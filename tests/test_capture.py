"""Captured draft steps (``capture=``, :mod:`specvlm.capture`): the static side computes what
the eager side computes, the output is the target's with capture on (all three families, greedy
and sampling, padded vocabularies, long runs, calls with different inputs), runners are reused,
kept apart between concurrent calls and released with the decoder. Compiling costs seconds per
width on a CPU: one decoder per family is shared by the end-to-end tests."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import specvlm
from specvlm import calibration
from specvlm.attention import BasePlan, MaskedPlan, TreePlan, routed_attention
from specvlm.capture import CapturePool, StaticSide, capture_decision, check_capturable
from specvlm.capture.buckets import capacity_bucket, width_bucket
from specvlm.capture.steps import draft_widths, entries_needed, verify_widths
from specvlm.dynamic_tree import DynamicTree
from specvlm.policy import AutoPolicy
from specvlm.side import ones_mask
from specvlm.speculation import draft_prefill
from specvlm.trees import Tree
from specvlm.verify import verify_mask
from tests import tiny_models as tm

pytestmark = pytest.mark.usefixtures("one_thread", "reference_kernels")
# Inductor (what ships) compiles the static-side tests, LLaVA-OneVision's end-to-end test and the
# sampling test; the others test the logic around the compiler with the aot_eager backend
# (traced_capture: the same dynamo graph, no code generation), to keep the suite's time.
traced = pytest.mark.usefixtures("traced_capture")

NEW = 24
TREE = [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]  # levels of 2, 3, 1 nodes
_PAIRS: dict = {}
_DECODERS: dict = {}


def pair(family):
    if family not in _PAIRS:
        _PAIRS[family] = tm.make_pair(family, seed=0)
    return _PAIRS[family]


def captured_decoder(family, copy_draft: bool):
    """One capture=True decoder per (family, draft) for the module: compiled once."""
    key = (family, copy_draft)
    if key not in _DECODERS:
        target, draft = pair(family)
        draft = tm.make_copy_draft(target) if copy_draft else draft
        _DECODERS[key] = specvlm.accelerate((target, draft), drop_rate=0.5, tree=TREE, capture=True)
    return _DECODERS[key]


# -------------------------------------------------------------------------------------------
# Buckets and decisions (no compiling)
# -------------------------------------------------------------------------------------------
def test_buckets():
    assert [width_bucket(n) for n in (1, 2, 3, 4, 5, 9, 16, 17)] == [1, 2, 4, 4, 8, 16, 16, 32]
    assert capacity_bucket(1) == 256 and capacity_bucket(256) == 256
    assert capacity_bucket(257) == 512 and capacity_bucket(5000) == 8192
    with pytest.raises(ValueError):
        width_bucket(0)
    # a captured forward costs its width bucket's time, which the policy prices (not linearly)
    row = {1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0}
    assert calibration.ForwardCosts({16: row}, bucketed=True).seconds(5, 16) == 8.0
    assert calibration.ForwardCosts({16: row}).seconds(5, 16) == 5.0
    tree = Tree.from_paths(TREE)
    assert draft_widths(tree) == (1, 2, 4)  # chains of 1-2, levels of 2 and 3 (the last unfed)
    assert entries_needed(100, 20, tree.size) == 100 + 20 + 6 + 1 + 8
    assert verify_widths(tree) == (1, 4, 8)  # plain decoding; the root + cuts of 2, 5, 6 nodes


def test_capture_option_checked():
    target, draft = pair("llava_onevision")
    for bad in ("yes", 1, None, "on"):
        with pytest.raises(ValueError, match="capture must be"):
            specvlm.accelerate((target, draft), capture=bad)


def test_auto_is_eager_on_cpu_and_says_why():
    target, draft = pair("llava_onevision")
    sd = specvlm.accelerate((target, draft), drop_rate=0.5, tree=TREE)
    inputs = tm.make_inputs("llava_onevision", target, seed=3)
    sd.generate(**inputs, max_new_tokens=4)
    assert sd.last_stats.captured is False
    assert not sd.last_stats.target_captured
    assert sd.last_stats.capture_reason == (
        "draft: auto: eager on cpu (compiling costs more than a call saves); "
        "target: auto: the target's forwards run eager"
    )
    decoder = draft.model.language_model
    assert capture_decision(False, "draft", decoder) == (False, "capture=False")
    assert capture_decision(True, "draft", decoder) == (True, "capture=True")
    assert capture_decision(True, "target", target.model.language_model)[0] is True


def test_capture_true_refused_where_no_explicit_mask(monkeypatch):
    target, draft = pair("llava_onevision")
    cfg = draft.model.language_model.config
    monkeypatch.setattr(cfg, "_attn_implementation_internal", "flash_attention_2")
    assert "flash_attention_2" in check_capturable(draft.model.language_model)
    with pytest.raises(NotImplementedError, match="capture=True: the draft cannot be captured"):
        specvlm.accelerate((target, draft), capture=True)
    sd = specvlm.accelerate((target, draft), drop_rate=0.5, tree=TREE)  # auto: eager, no error
    assert capture_decision("auto", "draft", draft.model.language_model)[0] is False
    assert sd.capture == "auto"


def test_a_model_split_over_devices_is_not_captured():
    target, _ = pair("llava_onevision")
    decoder = target.model.language_model
    head = torch.nn.Linear(2, 2, device="meta")  # a head on another device than the decoder
    assert "split over 2 devices" in check_capturable(decoder, head)
    with pytest.raises(NotImplementedError, match="the target cannot be captured: it is split"):
        capture_decision(True, "target", decoder, head)


def test_runners_kept_apart_reused_and_keyed_by_dtype():
    draft = tm.make_pair("qwen2_5_vl", seed=5)[1]
    fam_decoder = draft.model.language_model
    capture = CapturePool(fam_decoder, draft.lm_head, draft.get_input_embeddings(), "draft")
    with capture.runner(300) as a, capture.runner(300) as b:
        assert a is not b and a.capacity == b.capacity == 512  # two calls never share a cache
    with capture.runner(400) as c:
        assert c in (a, b)  # given back, then reused
    draft.to(torch.float64)  # the model moved to another dtype: new runners
    with capture.runner(300) as d:
        assert d not in (a, b) and d.dtype == torch.float64
    assert capture.runners == 3
    sizes = (300, 600, 1200)  # three capacity buckets at once: two are kept afterwards (LRU)
    with capture.runner(sizes[0]), capture.runner(sizes[1]), capture.runner(sizes[2]):
        pass
    kept = sorted(r.capacity for rs in capture._free.values() for r in rs if r.dtype == draft.dtype)
    assert len(kept) == 2 and capture.memory_bytes() == 0  # nothing allocated before a forward
    capture.release()
    assert not capture._free


@traced
def test_capture_true_without_speculation_checks_only_the_target(monkeypatch):
    """speculate=False runs no draft: a draft that could not be captured is no error."""
    target, draft = pair("llava_onevision")
    cfg = draft.model.language_model.config
    monkeypatch.setattr(cfg, "_attn_implementation_internal", "flash_attention_2")
    sd = specvlm.accelerate((target, draft), speculate=False, capture=True)
    inputs = tm.make_inputs("llava_onevision", target, seed=12)
    with torch.no_grad():
        ref = target.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert sd.generate(**inputs, max_new_tokens=6).tolist() == ref.tolist()
    stats = sd.last_stats
    assert stats.target_captured and not stats.captured
    assert stats.capture_reason == "draft: no draft in this call; target: capture=True"
    sd.release_captures()
    assert not sd._capture.pools["target"]._free


# -------------------------------------------------------------------------------------------
# The static side against the eager side
# -------------------------------------------------------------------------------------------
def test_static_side_computes_the_eager_logits():
    family = "qwen3_vl"  # M-RoPE, q/k norms, deepstack in the prefill
    target, draft = pair(family)
    fam = specvlm.families.family_of(draft, "draft")
    inputs = tm.make_inputs(family, target, seed=5)
    keep = torch.ones(inputs["input_ids"].shape[1], dtype=torch.bool)
    keep[3:9] = False
    vocab = target.lm_head.weight.shape[0]
    with torch.no_grad(), routed_attention(fam.decoder(draft)):  # as the loop runs
        eager = draft_prefill(fam, draft, inputs, keep, "original", vocab)
        capture = CapturePool(
            fam.decoder(draft), fam.lm_head(draft), draft.get_input_embeddings(), "draft"
        )
        with capture.runner(eager.length + 64) as runner:
            static = StaticSide.adopt(
                draft_prefill(fam, draft, inputs, keep, "original", vocab), runner
            )
            assert static.length == eager.length
            _same_steps(eager, static)
            assert static.forwards == eager.forwards


def test_static_target_side_verifies_as_the_eager_side():
    """The target's verification (a tree mask after the prefix) and a plain decoding step."""
    family = "qwen2_5_vl"
    target, _ = pair(family)
    fam = specvlm.families.family_of(target, "target")
    inputs = tm.make_inputs(family, target, seed=7)
    keep = torch.ones(inputs["input_ids"].shape[1], dtype=torch.bool)
    vocab = target.lm_head.weight.shape[0]
    tree = Tree.from_paths(TREE)
    with torch.no_grad(), routed_attention(fam.decoder(target)):
        eager = draft_prefill(fam, target, inputs, keep, "original", vocab)
        pool = CapturePool(
            fam.decoder(target), fam.lm_head(target), target.get_input_embeddings(), "target"
        )
        with pool.runner(eager.length + 32) as runner:
            static = StaticSide.adopt(
                draft_prefill(fam, target, inputs, keep, "original", vocab), runner
            )
            base = eager.length
            plan = TreePlan(verify_mask(tree))
            offsets = torch.tensor([0, *tree.depths])
            tokens = [3, 9, 11, 13, 17, 19, 23]
            mask = ones_mask(base + len(tokens), "cpu")
            outs = [side.step(tokens, offsets, plan, mask, slice(None)) for side in (eager, static)]
            torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
            for side in (eager, static):
                side.keep(base, [0, 1, 3])  # the root, node 0 and node 2 (its child)
                side.next_pos = side.next_pos + 3
            mask = ones_mask(base + 4, "cpu")
            outs = [
                side.step([29], torch.tensor([0]), BasePlan(), mask, slice(0, 1))
                for side in (eager, static)
            ]
            torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)


def _same_steps(eager, static):
    """Chain, masked level, compaction, chain again: the logits agree to fp32 rounding."""
    base = eager.length

    def both(tokens, offsets, plan, rows, start=None):
        outs = []
        for side in (eager, static):
            mask = torch.ones(1, side.length + len(tokens), dtype=torch.long)
            outs.append(side.step(tokens, offsets, plan, mask, rows, start=start))
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
        assert eager.length == static.length

    both([5, 7], torch.arange(2), BasePlan(), slice(None))
    level = torch.ones(1, 1, 3, base + 2 + 3, dtype=torch.bool)
    level[0, 0, :, base + 2 :] = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    both([9, 11, 13], torch.tensor([2, 3, 3]), MaskedPlan(level), slice(None))
    for side in (eager, static):
        side.keep(base, [0, 1, 3])  # the chain, and the level's second node
    both([17], torch.tensor([0]), BasePlan(), slice(0, 1), start=eager.next_pos + 4)


# -------------------------------------------------------------------------------------------
# End to end: the target's output, the eager run's acceptance
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", tm.FAMILIES)
def test_greedy_identical_with_capture(family, request):
    if family != "llava_onevision":
        request.getfixturevalue("traced_capture")
    target, draft = pair(family)
    eager = specvlm.accelerate((target, draft), drop_rate=0.5, tree=TREE, capture=False)
    for copy_draft, seed, new in ((False, 1, NEW), (True, 2, 90), (True, 4, NEW)):
        sd = captured_decoder(family, copy_draft)
        if copy_draft:
            eager = specvlm.accelerate((target, sd.draft), drop_rate=0.5, tree=TREE, capture=False)
        inputs = tm.make_inputs(family, target, seed=seed)
        with torch.no_grad():
            ref = target.generate(**inputs, max_new_tokens=new, do_sample=False)
        assert sd.generate(**inputs, max_new_tokens=new).tolist() == ref.tolist()
        stats = sd.last_stats
        assert stats.captured and stats.target_captured
        assert stats.capture_reason == "draft: capture=True; target: capture=True"
        assert eager.generate(**inputs, max_new_tokens=new).tolist() == ref.tolist()
        # the same proposals: the same acceptance step by step, the same forwards
        assert stats.accepted_lengths == eager.last_stats.accepted_lengths
        assert stats.draft_forwards == eager.last_stats.draft_forwards
    pools = captured_decoder(family, True)._capture.pools
    assert pools["draft"].runners == pools["target"].runners == 1  # reused across calls
    assert max(captured_decoder(family, True).last_stats.accepted_lengths) > 2


DYNAMIC = DynamicTree(budget=6, depth=3, width=3, top_k=3)


@traced
@pytest.mark.parametrize("family", tm.FAMILIES)
def test_dynamic_tree_with_capture(family):
    """A dynamic tree's steps captured in bucketed widths: the target's tokens (greedy), the
    eager run's acceptance step by step and its sample (same generator), and every width a
    step fed compiled before the first step (exactly the widths draft_widths / verify_widths
    name: a width missing there would be compiled mid-call, and show here)."""
    target, draft = pair(family)
    copy = tm.make_copy_draft(target)
    for model, seed, drop_rate in ((draft, 1, 0.5), (copy, 2, 0.0)):
        sd, eager = (
            specvlm.accelerate((target, model), drop_rate=drop_rate, tree=DYNAMIC, capture=on)
            for on in (True, False)
        )
        inputs = tm.make_inputs(family, target, seed=seed)
        with torch.no_grad():
            ref = target.generate(**inputs, max_new_tokens=NEW, do_sample=False)
        assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref.tolist()
        assert eager.generate(**inputs, max_new_tokens=NEW).tolist() == ref.tolist()
        stats = sd.last_stats
        assert stats.captured and stats.target_captured and stats.tree == DYNAMIC
        assert stats.accepted_lengths == eager.last_stats.accepted_lengths
        options = dict(max_new_tokens=NEW, do_sample=True, temperature=1.3, top_k=20)
        samples = [
            decoder.generate(**inputs, **options, generator=torch.Generator().manual_seed(seed))
            for decoder in (sd, eager)
        ]
        assert samples[0].tolist() == samples[1].tolist()
        for role, widths in (("draft", draft_widths), ("target", verify_widths)):
            (runner,) = [r for rs in sd._capture.pools[role]._free.values() for r in rs]
            assert runner.widths == widths(DYNAMIC) and not runner.eager_widths
    assert max(stats.accepted_lengths) == DYNAMIC.depth + 1  # the copy: whole paths accepted
    assert draft_widths(DYNAMIC) == (1, 2, 4) and verify_widths(DYNAMIC) == (1, 2, 4, 8)


@traced
def test_dynamic_tree_cache_holds_every_candidate_fed():
    """A step of a narrow, wide-fed dynamic tree feeds far more candidates than it verifies
    (here 200 against 2): the draft's static cache is sized for them (DynamicTree.most_fed),
    and the output is the target's."""
    family = "llava_onevision"
    target, _ = pair(family)
    wide = DynamicTree(budget=2, depth=8, width=32, top_k=8)
    assert wide.most_fed == 8 + 6 * 32 and wide.most_verified == 2
    sd = specvlm.accelerate(
        (target, tm.make_copy_draft(target)), drop_rate=0.0, tree=wide, capture=True
    )
    inputs = tm.make_inputs(family, target, seed=3)
    with torch.no_grad():
        ref = target.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref.tolist()
    stats = sd.last_stats
    # every step fed its levels down to depth 8 (the pending chain, then 7 levels)
    assert stats.captured and stats.draft_forwards > len(stats.accepted_lengths) * 7
    (runner,) = [r for rs in sd._capture.pools["draft"]._free.values() for r in rs]
    assert runner.capacity >= inputs["input_ids"].shape[1] + NEW + wide.most_fed


def test_sampling_with_capture_matches_eager_draws():
    """With the same generator, captured and eager drafts draw the same sample here (their
    draft probabilities agree to rounding); the sampler's exactness is tested per step in
    test_sampler.py, independently of how the draft computed its probabilities."""
    family = "qwen2_5_vl"
    target, _ = pair(family)
    sd = captured_decoder(family, True)
    eager = specvlm.accelerate((target, sd.draft), drop_rate=0.5, tree=TREE, capture=False)
    inputs = tm.make_inputs(family, target, seed=6)
    options = dict(max_new_tokens=NEW, do_sample=True, temperature=1.3, top_k=20)
    outs = [
        decoder.generate(**inputs, **options, generator=torch.Generator().manual_seed(0))
        for decoder in (sd, eager)
    ]
    assert sd.last_stats.captured and not eager.last_stats.captured
    assert outs[0].tolist() == outs[1].tolist()


@traced
def test_padded_draft_vocabulary_with_capture():
    family = "llava_onevision"
    target = pair(family)[0]
    small = tm.make_pair(family, seed=0)[1]
    small.resize_token_embeddings(tm.VOCAB_SIZE + 40)
    inputs = tm.make_inputs(family, target, seed=14)
    with torch.no_grad():
        ref = target.generate(**inputs, do_sample=False, max_new_tokens=NEW)
    sd = specvlm.accelerate((target, small), drop_rate=0.5, tree=TREE, capture=True)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref.tolist()
    assert sd.last_stats.captured


@traced
def test_static_caches_released_with_the_decoder():
    family = "llava_onevision"
    target, draft = pair(family)
    sd = specvlm.accelerate((target, draft), drop_rate=0.5, tree=[[0]], capture=True)
    sd.generate(**tm.make_inputs(family, target, seed=8), max_new_tokens=6)
    pools = sd._capture.pools.values()
    assert sd.last_stats.captured and all(pool.memory_bytes() > 0 for pool in pools)
    keys = [weakref.ref(r.cache) for pool in pools for rs in pool._free.values() for r in rs]
    assert len(keys) == 2
    del sd, pools
    gc.collect()
    assert all(k() is None for k in keys)


@traced
def test_policy_chooses_by_the_captured_costs():
    """With the automatic policy, calibration measures each model on the call's own runner (its
    widths compiled once, shared with the call); the output stays the target's."""
    family = "llava_onevision"
    target, draft = pair(family)
    # speculation pinned: whether it pays follows the measured costs, which a loaded machine
    # can swing; the drop rate and the tree are still chosen by them
    sd = specvlm.accelerate((target, draft), policy=AutoPolicy(speculate=True), capture=True)
    inputs = tm.make_inputs(family, target, seed=9)
    with torch.no_grad():
        ref = target.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref.tolist()
    stats = sd.last_stats
    assert stats.policy == "auto" and stats.calibration > 0
    roles = {key[0] for key in sd.policy.costs}
    assert {r.split(":")[0] for r in roles} == {"draft", "target"}
    assert all(":captured:" in r for r in roles)  # never the eager forwards
    for key, costs in sd.policy.costs.items():
        widths = (
            calibration.DRAFT_WIDTHS if key[0].startswith("draft") else calibration.TARGET_WIDTHS
        )
        assert all(set(row) == set(widths) for row in costs.forward.values())
    assert stats.speculated and stats.captured and stats.target_captured
    pools = sd._capture.pools
    assert pools["draft"].runners == pools["target"].runners == 1  # shared with calibration


def test_auto_falls_back_to_eager_where_capture_fails(monkeypatch):
    """``"auto"`` never fails a call for capture's sake: where compiling fails it drafts eagerly,
    says why, and does not try again; ``capture=True`` raises instead."""
    from specvlm.capture import decision, runner

    family = "qwen2_5_vl"
    target, draft = pair(family)
    inputs = tm.make_inputs(family, target, seed=10)
    with torch.no_grad():
        ref = target.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    tries = []

    def failing_compile(function, **kwargs):
        def run(*args):
            tries.append(1)
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(decision, "AUTO_CAPTURE_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(runner.torch, "compile", failing_compile)
    for policy in (None, "auto"):  # failing at adoption (fixed), at calibration (policy)
        settings = dict(drop_rate=0.5, tree=TREE) if policy is None else {}
        sd = specvlm.accelerate((target, draft), **settings)
        for _call in range(2):
            assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref.tolist()
            stats = sd.last_stats
            assert not stats.captured
            assert (
                "capture failed" in stats.capture_reason and "no compiler" in stats.capture_reason
            )
            assert len(tries) == 1  # tried once, then eager
        tries.clear()
    forced = specvlm.accelerate((target, draft), drop_rate=0.5, tree=TREE, capture=True)
    with pytest.raises(runner.CaptureFailed, match="no compiler here"):
        forced.generate(**inputs, max_new_tokens=NEW)


@traced
def test_a_compiled_width_that_fails_later_runs_eager():
    """A compiled forward that fails after its first call (a guard that changed past dynamo's
    recompile limit, say) is dropped: the width runs eager over the same static cache, the
    output stays the target's and the stats say so."""
    family = "llava_onevision"
    target, draft = pair(family)
    sd = specvlm.accelerate((target, draft), drop_rate=0.5, tree=[[0]], capture=True)
    inputs = tm.make_inputs(family, target, seed=11)
    with torch.no_grad():
        ref = target.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref.tolist()
    (runner,) = [r for rs in sd._capture.pools["draft"]._free.values() for r in rs]

    def broken(*args):
        raise RuntimeError("recompile limit hit")

    runner._compiled[1] = broken
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref.tolist()
    stats = sd.last_stats
    assert stats.captured and runner.eager_widths == {1: "RuntimeError: recompile limit hit"}
    assert stats.capture_reason.endswith(
        "draft widths run eager: 1 (RuntimeError: recompile limit hit)"
    )
    assert 1 not in runner.widths and 2 in runner.widths


# -------------------------------------------------------------------------------------------
# On a GPU: CUDA graphs (mode="reduce-overhead"); skipped, and reported skipped, without one
# -------------------------------------------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@needs_cuda
@pytest.mark.parametrize("family", tm.FAMILIES)
def test_cuda_graph_steps_give_the_targets_tokens(family):
    """Captured steps replayed as CUDA graphs (draft and target), from the main thread and
    from two worker threads at once (each thread records its own graphs)."""
    import threading

    target, _ = tm.make_pair(family, seed=0)
    target = target.cuda()
    draft = tm.make_copy_draft(target).cuda()
    inputs = {
        k: v.cuda() if isinstance(v, torch.Tensor) else v
        for k, v in tm.make_inputs(family, target, seed=1).items()
    }
    with torch.no_grad():
        ref = target.generate(**inputs, max_new_tokens=NEW, do_sample=False).tolist()
    sd = specvlm.accelerate((target, draft), drop_rate=0.5, tree=TREE, capture=True)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref
    stats = sd.last_stats
    assert stats.captured and stats.target_captured, stats.capture_reason
    auto = specvlm.accelerate((target, draft), drop_rate=0.5, tree=TREE)
    assert auto.generate(**inputs, max_new_tokens=NEW).tolist() == ref
    assert auto.last_stats.captured and not auto.last_stats.target_captured
    outs: list = []

    def worker():
        outs.append(auto.generate(**inputs, max_new_tokens=NEW).tolist())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outs == [ref, ref]
