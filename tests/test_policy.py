"""The automatic policy (``accelerate(policy="auto")``, the default) and plain decoding.

What is checked: the policy chooses plain decoding where speculation cannot pay (a draft as slow
as the target; a draft whose proposals are never accepted, during the first call already), it
speculates with a cheap draft and grows the tree with the acceptance it sees, it tries pruning
only where the measured costs promise a clear gain; the output never changes (token for token
with ``target.generate``, all three families, whatever the policy chose; plain decoding also
when sampling, draw for draw with the same seed); every override is honoured; what was chosen
is reported in ``last_stats``. Forward costs are either measured (the real calibration, on the
tiny models) or given to the policy, so a test does not depend on this machine's speed.
"""

from __future__ import annotations

import copy

import pytest
import torch

import specvlm
from specvlm import policy as pol
from specvlm.calibration import ForwardCosts, context_bucket
from specvlm.families import family_of
from specvlm.policy import AutoPolicy, RankAcceptance, ranked_paths, tree_tau
from specvlm.selectors import keep_count
from specvlm.stats import GenerationStats
from specvlm.trees import Tree, build_tree, chain, default_tree
from tests import tiny_models as tm

FAMILIES = tm.FAMILIES
NEW = 12


pytestmark = pytest.mark.usefixtures("one_thread", "reference_kernels")


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


_PAIRS: dict = {}


def pair(family):
    if family not in _PAIRS:
        _PAIRS[family] = tm.make_pair(family, seed=0)
    return _PAIRS[family]


def reference(target, inputs, **kw):
    kw.setdefault("max_new_tokens", NEW)
    with torch.no_grad():
        return target.generate(**inputs, do_sample=False, **kw)


BUCKETS = tuple(1 << k for k in range(4, 13))  # 16 .. 4096: no calibration needed


def costs(target_s, draft_s, *, draft_by_context=None, target=None, draft=None):
    """A policy's cost table: ``target_s(n)`` / ``draft_s(n)`` seconds for a forward of ``n``
    tokens at every context (or ``draft_by_context(n, c)``), keyed as the policy keys models."""
    fam = family_of(target)
    table = {}
    for role, model, fn in (
        ("target", target, lambda n, c: target_s(n)),
        ("draft", draft, draft_by_context or (lambda n, c: draft_s(n))),
    ):
        fc = ForwardCosts()
        for b in BUCKETS:
            fc.forward[b] = {n: fn(n, b) for n in (1, 2, 4, 8, 16, 32, 64)}
            fc.prefill[b] = fn(b, b) / 4
        table[AutoPolicy._key(role, fam, model)] = fc
    return table


def cheap(target, draft, **kw):
    """A draft 20x cheaper than the target, both nearly flat in the tokens fed (as small models
    on a CPU, or a big target on a GPU); the same costs on captured steps of every capacity.
    Nothing is learned from the wall clock (``learn_timing=False``): the costs given decide,
    on a loaded machine too."""
    table = costs(lambda n: 5e-3 + 2e-5 * n, lambda n: 2.5e-4, target=target, draft=draft, **kw)
    for (role, device, dtype), fc in list(table.items()):
        for capacity in (256 << k for k in range(8)):  # the static caches' capacity buckets
            captured = ForwardCosts(copy.deepcopy(fc.forward), dict(fc.prefill), bucketed=True)
            table[f"{role}:captured:{capacity}", device, dtype] = captured
    return AutoPolicy(costs=table, learn_timing=False)


# --------------------------------------------------------------------------------------------
# The parts: ranked paths, acceptance counts, the cost table
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rates", [(0.72, 0.12, 0.05, 0.03), (0.95, 0.3), (0.5,), (0.2, 0.19)])
def test_ranked_paths_give_build_tree(rates):
    ranked = ranked_paths(rates, limit=200, max_depth=6)
    for depth in range(1, 7):
        paths = [p for p, _ in ranked if len(p) <= depth]
        for n in (1, 2, 3, 5, 8, 16, 48):
            if n <= len(paths):
                assert Tree.from_paths(paths[:n]) == build_tree(rates, n, depth)
    # the default tree is the 48 best paths of depth <= 6 for the default assumption
    assert (
        Tree.from_paths([p for p, _ in ranked_paths(pol.PRIOR + (0.006, 0.005), max_depth=6)][:48])
        == default_tree()
    )


def test_tree_tau_is_one_plus_the_acceptance_chance_of_every_node():
    tree = Tree.from_paths([[0], [1], [0, 0]])
    assert tree_tau(tree, (0.5, 0.25)) == pytest.approx(1 + 0.5 + 0.25 + 0.25)
    assert tree_tau(chain(3), (1.0,)) == 4


def test_record_step_counts_offers_and_hits_by_rank():
    tree = Tree.from_paths([[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]])
    stats = GenerationStats()
    stats.record_step(tree, [0, 2])  # root -> [0] -> [0, 0]; [0, 0] offers [0, 0, 0], refused
    stats.record_step(tree, [])  # the root's children both refused
    stats.record_step(tree, [1, 4])  # rank 1, then its only child
    assert stats.rank_offers == [6, 4] and stats.rank_hits == [3, 1]
    # per depth of the children: the root's (2+2+2 offered; ranks 0 and 1 taken once each),
    # depth 2's ([0] offers 2, [1] offers 1; [0, 0] and [1, 0] taken), depth 3's ([0, 0] offers 1)
    assert stats.depth_rank_offers == [[3, 3], [2, 1], [1]]
    assert stats.depth_rank_hits == [[1, 1], [2, 0], [0]]


def test_rank_acceptance_blends_prior_and_forgets():
    acc = RankAcceptance()
    (row,) = acc.rates((0.6, 0.2), 3)  # no counts: one row, the prior's
    assert row == pytest.approx((0.6, 0.2, 0.2))
    assert acc.rates((0.9, 0.2), 3)[0] == pytest.approx((0.9, 0.1, 0.001))  # capped: sum <= 1
    acc.add([10, 10], [10, 0])
    ((hi, lo),) = acc.rates((0.6, 0.2), 2)  # no counts per depth: one row for every depth
    assert hi == pytest.approx((10 + pol.PRIOR_WEIGHT * 0.6) / (10 + pol.PRIOR_WEIGHT))
    assert lo == pytest.approx((0 + pol.PRIOR_WEIGHT * 0.2) / (10 + pol.PRIOR_WEIGHT))
    acc.add([10], [0])  # old counts weigh MEMORY
    assert acc.offers[0] == pytest.approx(10 * pol.MEMORY + 10)
    assert acc.hits[0] == pytest.approx(10 * pol.MEMORY)


def test_acceptance_per_depth():
    """Each depth's own counts pull its row away from the rates over all depths (worth
    DEPTH_PRIOR_WEIGHT offers); a depth without counts keeps the overall row, and the tree
    search and tau read each level's row."""
    stats = GenerationStats()
    stats.rank_offers, stats.rank_hits = [40, 40], [24, 8]
    stats.depth_rank_offers, stats.depth_rank_hits = [[20, 20], [20, 20]], [[19, 1], [5, 7]]
    acc = RankAcceptance()
    acc.add_call(stats)
    table = acc.rates((0.6, 0.2), 2)
    overall = ((24 + 0.6) / 41, (8 + 0.2) / 41)
    w = pol.DEPTH_PRIOR_WEIGHT
    assert len(table) == 3 and table[2] == pytest.approx(overall)  # depth 3+: overall
    assert table[0][0] == pytest.approx((19 + w * overall[0]) / (20 + w))
    assert table[1][0] == pytest.approx((5 + w * overall[0]) / (20 + w))
    assert table[1][1] == pytest.approx((7 + w * overall[1]) / (20 + w))
    assert tree_tau(chain(3), table) == pytest.approx(
        1 + table[0][0] * (1 + table[1][0] * (1 + table[2][0]))
    )
    # rank 1 is the better child at depth 2: the search takes it first there, not with one row
    ranked = [p for p, _ in ranked_paths(pol._rounded(table), limit=3, max_depth=4)]
    assert ranked == [(0,), (0, 1), (0, 0)]
    flat = [p for p, _ in ranked_paths(pol._rounded(overall), limit=3, max_depth=4)]
    assert flat == [(0,), (0, 0), (0, 0, 0)]
    merged = acc.plus(stats)  # a running call's counts added, not decayed
    assert merged.depth_offers[1] == [40, 40]
    assert acc.depth_offers[1] == [20, 20]  # its own unchanged
    acc.add_call(GenerationStats())  # a call without steps only forgets
    assert acc.depth_hits[0] == pytest.approx([19 * pol.MEMORY, pol.MEMORY])


def test_forward_costs_interpolate():
    fc = ForwardCosts({64: {1: 1.0, 4: 4.0}, 256: {1: 3.0, 4: 6.0}}, {64: 10.0, 256: 30.0})
    assert fc.seconds(2, 64) == pytest.approx(2.0)
    assert fc.seconds(8, 64) == pytest.approx(8.0)  # linear beyond the widest
    assert fc.seconds(1, 160) == pytest.approx(2.0)  # linear between contexts
    assert fc.seconds(1, 16) == 1.0 and fc.seconds(1, 4096) == 3.0  # nearest outside
    assert fc.prefill_seconds(160) == pytest.approx(20.0)
    assert [context_bucket(c) for c in (1, 16, 22, 23, 100, 1000)] == [16, 16, 16, 32, 128, 1024]


# --------------------------------------------------------------------------------------------
# Choices, with given costs
# --------------------------------------------------------------------------------------------
def choose(policy, target, draft, **kw):
    args = dict(prompt_len=150, video_tokens=128, max_new_tokens=24, max_rank=100)
    args.update(kw)
    choice, spent = policy.choose(family_of(target), target, draft, **args)
    assert spent == 0.0  # the costs were given
    return choice


def test_plain_decoding_where_the_draft_is_as_slow_as_the_target():
    target, draft = pair("llava_onevision")
    same = lambda n: 5e-3 + 2e-5 * n  # noqa: E731
    policy = AutoPolicy(costs=costs(same, same, target=target, draft=draft), learn_timing=False)
    choice = choose(policy, target, draft)
    assert not choice.speculate and "too slow" in choice.reason
    # even a perfect draft cannot pay for itself then: no probing either
    policy.acceptance[0.0] = RankAcceptance([1000.0], [1000.0])
    for _ in range(2 * pol.PROBE_EVERY):
        assert not choose(policy, target, draft).speculate


def test_speculates_with_a_cheap_draft_and_grows_the_tree_with_acceptance():
    target, draft = pair("llava_onevision")
    policy = cheap(target, draft)
    first = choose(policy, target, draft)
    assert first.speculate and first.drop_rate == 0.0 and first.predicted_speedup > 1.5
    assert not first.score_video  # nothing to prune: no scoring
    policy.acceptance[0.0] = RankAcceptance([100.0, 10.0], [97.0, 1.0])  # a very good draft
    good = choose(policy, target, draft)
    assert good.tree.depth > first.tree.depth
    assert good.predicted_speedup > first.predicted_speedup


def test_plain_decoding_once_acceptance_is_seen_to_be_zero_then_probes():
    target, draft = pair("llava_onevision")
    policy = cheap(target, draft)
    assert choose(policy, target, draft).speculate  # the prior promises acceptance
    policy.acceptance[0.0] = RankAcceptance([50.0] * 8, [0.0] * 8)
    runs = [choose(policy, target, draft) for _ in range(pol.PROBE_EVERY)]
    assert not any(c.speculate for c in runs[:-1])
    assert "acceptance" in runs[0].reason
    assert runs[-1].speculate and "probing" in runs[-1].reason


def test_pruning_is_tried_only_where_the_draft_context_costs():
    target, draft = pair("llava_onevision")
    flat = choose(cheap(target, draft), target, draft)
    assert flat.drop_rate == 0.0
    # a draft whose forwards cost grows steeply with its context (a long video on a big draft)
    steep = cheap(target, draft, draft_by_context=lambda n, c: 2.5e-4 + 2e-5 * c)
    choice = choose(steep, target, draft)
    assert choice.speculate and choice.drop_rate > 0 and choice.score_video
    assert "untried" in choice.reason
    # it turns out the draft accepts nothing without the whole video: back to drop rate 0
    steep.acceptance[0.0] = RankAcceptance([50.0, 50.0], [45.0, 2.0])
    steep.acceptance[choice.drop_rate] = RankAcceptance([50.0] * 8, [0.0] * 8)
    assert choose(steep, target, draft).drop_rate != choice.drop_rate


def test_no_video_means_no_pruning():
    target, draft = pair("llava_onevision")
    steep = cheap(target, draft, draft_by_context=lambda n, c: 2.5e-4 + 2e-5 * c)
    assert choose(steep, target, draft, video_tokens=0).drop_rate == 0.0


def test_one_new_token_is_plain():
    target, draft = pair("llava_onevision")
    assert not choose(cheap(target, draft), target, draft, max_new_tokens=1).speculate


# --------------------------------------------------------------------------------------------
# In the loop: lossless whatever the policy chooses
# --------------------------------------------------------------------------------------------
def test_auto_policy_is_the_default_and_reports_its_choice(family):
    target, draft = pair(family)
    inputs = tm.make_inputs(family, target, seed=1)
    sd = specvlm.accelerate((target, draft))
    assert isinstance(sd.policy, AutoPolicy) and sd.tree is None and sd.drop_rate is None
    out = sd.generate(**inputs, max_new_tokens=NEW)
    assert out.tolist() == reference(target, inputs).tolist()
    stats = sd.last_stats
    assert stats.policy == "auto" and stats.reason and stats.calibration > 0
    assert stats.new_tokens == NEW
    if stats.speculated:
        assert stats.tree is not None and stats.tree_size == stats.tree.size
    else:
        assert stats.draft_forwards == 0 and stats.plain_tokens == NEW - 1
    keys = set(sd.policy.costs)
    assert ("target", "cpu", "torch.float32") in keys and ("draft", "cpu", "torch.float32") in keys
    sd.generate(**inputs, max_new_tokens=NEW)
    assert sd.last_stats.calibration == 0.0  # measured once, cached on the decoder


def test_auto_speculation_is_lossless(family):
    """Cheap costs given, so the policy speculates; a copy of the target as the draft, so it
    sees high acceptance and grows its tree from call to call."""
    target, _ = pair(family)
    draft = tm.make_copy_draft(target)
    policy = cheap(target, draft)
    sd = specvlm.accelerate((target, draft), policy=policy)
    sizes = []
    for seed in (2, 3, 4):
        inputs = tm.make_inputs(family, target, seed=seed)
        assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == (
            reference(target, inputs).tolist()
        )
        assert sd.last_stats.speculated and sd.last_stats.fallback_step is None
        sizes.append(sd.last_stats.tree_depth)
    assert sizes[-1] > sizes[0]
    assert policy.acceptance[0.0].hits[0] > 0.9 * policy.acceptance[0.0].offers[0]


def test_auto_pruning_is_lossless(family):
    target, draft = pair(family)
    policy = cheap(target, draft, draft_by_context=lambda n, c: 2.5e-4 + 2e-5 * c)
    sd = specvlm.accelerate((target, draft), policy=policy)
    inputs = tm.make_inputs(family, target, seed=5)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == reference(target, inputs).tolist()
    stats = sd.last_stats
    assert stats.speculated and stats.drop_rate > 0 and stats.scored_video
    assert stats.kept_video_tokens < stats.video_tokens
    assert stats.video_scores is not None


def _never_accepted_draft(family):
    """A draft whose every proposal the target refuses: its LM head is zero, so it proposes the
    same tie-broken ids everywhere, and the target is told never to emit them."""
    target, draft = pair(family)
    draft = copy.deepcopy(draft)
    with torch.no_grad():
        draft.lm_head.weight.zero_()
    proposed = torch.zeros(1, tm.VOCAB_SIZE).topk(pol.MAX_RANKS, dim=-1).indices[0].tolist()
    return target, draft, {"suppress_tokens": proposed}


def test_zero_acceptance_falls_back_to_plain_decoding_in_the_first_call(family):
    """The prior promises acceptance, none comes: the first call goes on plainly after a few
    steps, the next ones decode plainly from the start (a draft a quarter of the target's cost:
    how little acceptance still pays depends on it)."""
    target, draft, never = _never_accepted_draft(family)
    quarter = costs(lambda n: 5e-3 + 2e-5 * n, lambda n: 1.25e-3, target=target, draft=draft)
    sd = specvlm.accelerate((target, draft), policy=AutoPolicy(costs=quarter, learn_timing=False))
    plain_from = None
    for call, seed in enumerate((6, 7, 8, 9, 10, 11)):
        inputs = tm.make_inputs(family, target, seed=seed)
        ref = reference(target, inputs, **never)
        assert sd.generate(**inputs, max_new_tokens=NEW, **never).tolist() == ref.tolist()
        stats = sd.last_stats
        if stats.speculated:
            assert plain_from is None  # once plain, it stays plain (until a probe, much later)
            steps = stats.fallback_step
            assert steps is not None and pol.MIN_STEPS <= steps <= 4
            assert stats.accepted_lengths == [1] * steps
            assert stats.plain_tokens == NEW - 1 - steps
        else:
            plain_from = call if plain_from is None else plain_from
            assert "acceptance" in stats.reason
            assert stats.draft_forwards == 0 and stats.plain_tokens == NEW - 1
    assert plain_from == 1


def test_measured_slow_draft_gives_plain_decoding():
    """Real calibration: the 'draft' is the 3-layer model and the 'target' the 1-layer one, so
    every draft forward costs more than a target forward."""
    big, small = pair("llava_onevision")
    sd = specvlm.accelerate((small, big))
    inputs = tm.make_inputs("llava_onevision", small, seed=8)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == reference(small, inputs).tolist()
    stats = sd.last_stats
    assert not stats.speculated and "too slow" in stats.reason
    assert stats.draft_forwards == 0 and stats.draft_prefill == 0.0
    assert not stats.scored_video and stats.video_scores is None


# --------------------------------------------------------------------------------------------
# Plain decoding and overrides
# --------------------------------------------------------------------------------------------
def test_plain_decoding_equals_generate(family):
    target, draft = pair(family)
    sd = specvlm.accelerate((target, draft), speculate=False)
    for seed, kw in ((9, {}), (10, {"max_new_tokens": 1}), (11, {"repetition_penalty": 1.3})):
        inputs = tm.make_inputs(family, target, seed=seed)
        kw.setdefault("max_new_tokens", NEW)
        assert sd.generate(**inputs, **kw).tolist() == reference(target, inputs, **kw).tolist()
        stats = sd.last_stats
        assert not stats.speculated and stats.draft_forwards == 0
        assert stats.target_forwards == stats.new_tokens and stats.policy == "fixed"


def test_plain_decoding_stops_at_eos(family):
    target, draft = pair(family)
    inputs = tm.make_inputs(family, target, seed=12)
    greedy = reference(target, inputs)[0, inputs["input_ids"].shape[1] :].tolist()
    eos = greedy[4]
    out = specvlm.accelerate((target, draft), speculate=False).generate(
        **inputs, max_new_tokens=NEW, eos_token_id=[eos, 1]
    )
    assert out.tolist() == reference(target, inputs, eos_token_id=[eos, 1]).tolist()
    assert out.shape[1] - inputs["input_ids"].shape[1] == greedy.index(eos) + 1


def test_plain_decoding_samples_as_generate_draws(family):
    """Sampling: the same draws as ``target.generate`` with the same seed (one multinomial per
    token from the same processed distribution), so the target's own distribution."""
    target, draft = pair(family)
    inputs = tm.make_inputs(family, target, seed=13)
    sd = specvlm.accelerate((target, draft), speculate=False)
    options = dict(do_sample=True, temperature=1.5, top_k=40, max_new_tokens=NEW)
    for seed in range(3):
        torch.manual_seed(seed)
        with torch.no_grad():
            ref = target.generate(**inputs, **options)
        torch.manual_seed(seed)
        assert sd.generate(**inputs, **options).tolist() == ref.tolist()


def test_overrides_are_honoured():
    target, draft = pair("llava_onevision")
    inputs = tm.make_inputs("llava_onevision", target, seed=14)
    ref = reference(target, inputs).tolist()
    cases = [
        ({"drop_rate": 0.5}, 0.5, default_tree()),
        ({"tree": chain(3)}, 0.9, chain(3)),
        ({"speculate": True}, 0.9, default_tree()),
        ({"policy": None}, 0.9, default_tree()),
        ({"policy": None, "drop_rate": 0.0, "tree": [[0], [1]]}, 0.0, Tree.from_paths([[0], [1]])),
    ]
    for kwargs, drop_rate, tree in cases:
        sd = specvlm.accelerate((target, draft), **kwargs)
        assert sd.policy is None
        assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref
        stats = sd.last_stats
        assert stats.policy == "fixed" and stats.speculated and stats.fallback_step is None
        assert stats.drop_rate == drop_rate and stats.tree == tree
        assert stats.scored_video  # as before the policy existed, even at drop rate 0
        assert stats.kept_video_tokens == keep_count(stats.video_tokens, drop_rate)
    sd = specvlm.accelerate((target, draft), speculate=False)
    sd.generate(**inputs, max_new_tokens=NEW)
    assert not sd.last_stats.speculated and sd.last_stats.reason == "plain decoding requested"


def test_bad_policy_arguments():
    target, draft = pair("llava_onevision")
    with pytest.raises(ValueError, match="policy must be"):
        specvlm.accelerate((target, draft), policy="fast")
    with pytest.raises(ValueError, match="speculate=False"):
        specvlm.accelerate((target, draft), speculate=False, drop_rate=0.5)
    with pytest.raises(ValueError, match="drop_rate"):
        specvlm.accelerate((target, draft), drop_rate=1.0)


# --------------------------------------------------------------------------------------------
# Partial auto: one setting pinned, the others chosen
# --------------------------------------------------------------------------------------------
def test_a_pinned_tree_is_kept_and_predicted_as_the_policy_predicts_every_tree():
    target, draft = pair("llava_onevision")
    pinned = Tree.from_paths([[0], [1], [0, 0]])
    steep = dict(draft_by_context=lambda n, c: 2.5e-4 + 2e-5 * c)
    policy = cheap(target, draft, **steep)
    policy.tree = pinned
    choice = choose(policy, target, draft)
    assert choice.speculate and choice.tree == pinned
    assert choice.drop_rate > 0  # the drop rate is still chosen: pruning pays here
    # the prediction of a tree best_tree itself picks is the same through tree_choice
    free = choose(cheap(target, draft, **steep), target, draft)
    again = cheap(target, draft, **steep)
    again.tree = free.tree
    pinned = choose(again, target, draft)
    assert pinned.step_seconds == pytest.approx(free.step_seconds)
    assert pinned.predicted_speedup == pytest.approx(free.predicted_speedup)  # tau too


def test_a_pinned_drop_rate_and_pinned_speculation():
    target, draft = pair("llava_onevision")
    steep = dict(draft_by_context=lambda n, c: 2.5e-4 + 2e-5 * c)
    policy = cheap(target, draft, **steep)
    policy.drop_rates = (0.5,)
    choice = choose(policy, target, draft)
    assert choice.drop_rate == 0.5 and choice.speculate
    # a draft as slow as the target: plain decoding, unless speculation is pinned on
    same = lambda n: 5e-3 + 2e-5 * n  # noqa: E731
    slow = costs(same, same, target=target, draft=draft)
    assert not choose(AutoPolicy(costs=slow, learn_timing=False), target, draft).speculate
    # drop rate 0 pinned away, plain predicted faster: the probe's check takes the pinned rate
    away = AutoPolicy(drop_rates=(0.9,), costs=slow, learn_timing=False)
    assert not choose(away, target, draft).speculate
    pinned = AutoPolicy(costs=slow, learn_timing=False, speculate=True)
    choice = choose(pinned, target, draft)
    assert choice.speculate and choice.reason == "speculation requested"
    stats = GenerationStats()
    stats.record_step(choice.tree, [])
    stats.accepted_lengths = [1] * 10  # nothing accepted: it does not fall back either
    assert pinned.keep_speculating(choice, stats)


def test_partial_auto_in_the_loop_is_lossless_and_reported(family):
    target, draft = pair(family)
    inputs = tm.make_inputs(family, target, seed=16)
    ref = reference(target, inputs).tolist()
    policy = cheap(target, draft)
    policy.tree, policy.drop_rates, policy.speculate = chain(3), (0.75,), True
    sd = specvlm.accelerate((target, draft), policy=policy)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref
    stats = sd.last_stats
    assert stats.policy == "auto" and stats.speculated and stats.fallback_step is None
    assert stats.tree == chain(3) and stats.drop_rate == 0.75
    assert stats.kept_video_tokens == keep_count(stats.video_tokens, 0.75)


def test_partial_auto_arguments():
    target, draft = pair("llava_onevision")
    for kwargs in ({"drop_rate": 0.5}, {"tree": chain(2)}, {"speculate": True}):
        with pytest.raises(ValueError, match="pin them in the policy"):
            specvlm.accelerate((target, draft), policy=AutoPolicy(), **kwargs)
    with pytest.raises(ValueError, match="use accelerate\\(speculate=False\\)"):
        AutoPolicy(speculate=False)
    for rates in ((1.0,), (False,), ()):
        with pytest.raises(ValueError, match="drop_rates must be"):
            AutoPolicy(drop_rates=rates)
    with pytest.raises(ValueError, match="pins a static tree.*dynamic_budgets"):
        AutoPolicy(tree="dynamic")
    assert AutoPolicy(tree=[[0], [0, 0]]).tree == chain(2)
    assert specvlm.AutoPolicy is AutoPolicy
    with pytest.raises(ValueError, match="rank-"):
        specvlm.accelerate((target, draft), policy=AutoPolicy(tree=[[tm.VOCAB_SIZE]]))


def test_the_policy_tries_each_selector_then_keeps_the_better_one():
    """Pinned at drop rate 0.9 with two selectors: they take turns for SELECTOR_TRIALS calls
    each, then the one with the better acceptance runs, the other again once it has been
    unused for SELECTOR_PROBE_EVERY calls; each selector's acceptance is kept apart."""
    target, draft = pair("llava_onevision")
    policy = cheap(target, draft)
    policy.drop_rates, policy.speculate = (0.9,), True
    policy.selectors = ("two_stage", "semantic")
    poor, good = GenerationStats(), GenerationStats()
    poor.rank_offers, poor.rank_hits = [40.0, 40.0], [10.0, 1.0]
    good.rank_offers, good.rank_hits = [40.0, 40.0], [36.0, 2.0]
    observed = {"two_stage": poor, "semantic": good}
    for name, stats in observed.items():
        stats.selector = name  # the selector that pruned the call
    chosen = []
    for _ in range(2 * pol.SELECTOR_TRIALS):
        choice = choose(policy, target, draft)
        chosen.append((choice.selector, choice.reason))
        policy.observe(choice, observed[choice.selector])
    assert [c for c, _ in chosen] == ["two_stage", "semantic"] * pol.SELECTOR_TRIALS
    assert "untried" in chosen[0][1]  # the drop rate itself
    assert "(selector semantic: trial 1 of 3)" in chosen[1][1]
    assert "(selector two_stage: trial 3 of 3)" in chosen[4][1]
    assert set(policy.acceptance) == {(0.9, "two_stage"), (0.9, "semantic")}
    runs = []
    for _ in range(pol.SELECTOR_PROBE_EVERY + 1):
        choice = choose(policy, target, draft)
        runs.append(choice.selector)
        policy.observe(choice, observed[choice.selector])
    # two_stage last ran at the drop rate's call 5: probed at call 14, 8 calls later
    assert pol.SELECTOR_PROBE_EVERY == 8
    assert runs == ["semantic"] * 7 + ["two_stage", "semantic"]
    # the better one's acceptance drops below the other's: the choice follows
    worse = GenerationStats(selector=choice.selector)
    worse.rank_offers, worse.rank_hits = [40.0, 40.0], [2.0, 0.0]
    for _ in range(6):
        policy.observe(choice, worse)
    assert choose(policy, target, draft).selector == "two_stage"


def test_selectors_chosen_in_the_loop_are_lossless_and_reported(family):
    target, draft = pair(family)
    inputs = tm.make_inputs(family, target, seed=16)
    ref = reference(target, inputs).tolist()
    policy = cheap(target, draft)
    policy.drop_rates, policy.speculate = (0.75,), True
    policy.selectors = ("semantic", "attention")
    sd = specvlm.accelerate((target, draft), policy=policy)
    chosen = []
    for _ in range(3):
        assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref
        chosen.append(sd.last_stats.selector)
    assert chosen == ["semantic", "attention", "semantic"]  # taking turns
    plain = specvlm.accelerate((target, draft), drop_rate=0.0)
    plain.generate(**inputs, max_new_tokens=NEW)
    assert plain.last_stats.selector == ""  # nothing pruned
    fixed = specvlm.accelerate((target, draft), drop_rate=0.5, selector="uniform")
    fixed.generate(**inputs, max_new_tokens=NEW)
    assert fixed.last_stats.selector == "uniform"


def test_selector_choice_arguments():
    target, draft = pair("llava_onevision")
    for bad in ("semantic", (), ("semantic", "semantic"), ("best",), [len]):
        with pytest.raises(ValueError, match="selectors must be"):
            AutoPolicy(selectors=bad)
    chooser = AutoPolicy(selectors=["two_stage", "random"])
    assert chooser.selectors == ("two_stage", "random")
    with pytest.raises(ValueError, match="leave one of them out"):
        specvlm.accelerate((target, draft), policy=chooser, selector="semantic")


def test_dynamic_trees_are_weighed_with_a_gain_learned_from_their_calls():
    """With dynamic budgets the policy predicts a dynamic tree as its reference static tree
    times the gain: dynamic calls seen to accept far more than their reference make it the
    choice, calls seen to accept less a static tree; the gain is taken at the rates known
    when it is used."""
    from specvlm.dynamic_tree import DynamicTree

    target, draft = pair("llava_onevision")
    policy = cheap(target, draft)
    policy.drop_rates, policy.dynamic_budgets = (0.5,), (16, 32)
    policy._dynamic_seen = [(12.0, DynamicTree(budget=16))]
    choice = choose(policy, target, draft)
    assert choice.dynamic and choice.tree.budget in (16, 32)
    rates = policy._rates(0.5, pol.MAX_RANKS)[0]  # what it was chosen on (drop rate untried)
    reference = pol.dynamic_reference(choice.tree, rates)
    assert reference.size == choice.tree.budget and reference.depth <= choice.tree.depth
    gain = policy._gain(rates)
    seen = tree_tau(pol.dynamic_reference(DynamicTree(budget=16), rates), rates)
    assert gain == pytest.approx(min(3.0, 12.0 / seen))
    fam = family_of(target)
    tgt = policy.costs[AutoPolicy._key("target", fam, target)]
    drf = policy.costs[AutoPolicy._key("draft", fam, draft)]
    predicted = pol.dynamic_choice(choice.tree, rates, tgt, drf, 200, 100, 23.0, gain)
    assert predicted.tau == pytest.approx(gain * tree_tau(reference, rates))
    # within the call, its own tokens per step decide whether speculation still pays
    stats = GenerationStats()
    stats.accepted_lengths = [1, 1, 1]
    assert not policy.keep_speculating(choice, stats)
    stats.accepted_lengths = [9, 8, 9]
    assert policy.keep_speculating(choice, stats)
    policy._dynamic_seen = [(1.0, DynamicTree(budget=16))]
    assert policy._gain(rates) == 0.5  # clamped
    assert not choose(policy, target, draft).dynamic
    # learning: a dynamic call's tokens per step and its limits are kept
    fresh = cheap(target, draft)
    fresh.drop_rates, fresh.dynamic_budgets = (0.5,), (16,)
    fresh._dynamic_seen = [(12.0, DynamicTree(budget=16))]
    dynamic = choose(fresh, target, draft)
    stats = GenerationStats()
    stats.accepted_lengths = [1, 2]
    stats.rank_offers, stats.rank_hits = [8, 8], [1, 1]
    stats.finish()
    fresh.observe(dynamic, stats)
    assert fresh._dynamic_seen[-1] == (1.5, dynamic.tree)
    assert not fresh.acceptance  # a dynamic call's ranks are not a static tree's


@pytest.mark.parametrize("capture", [False, True], ids=["eager", "captured"])
def test_dynamic_trees_chosen_in_the_loop_are_lossless_and_reported(family, capture, request):
    """A call the policy gave a dynamic tree: the target's tokens, the tree reported, its tokens
    per step learned; with capture=True it runs on the captured steps (their bucketed widths,
    tests/test_capture.py)."""
    from specvlm.dynamic_tree import DynamicTree

    if capture:
        request.getfixturevalue("traced_capture")
    target, draft = pair(family)
    inputs = tm.make_inputs(family, target, seed=16)
    ref = reference(target, inputs).tolist()
    policy = cheap(target, draft)
    policy.drop_rates, policy.speculate, policy.dynamic_budgets = (0.5,), True, (8,)
    policy._dynamic_seen = [(9.0, DynamicTree(budget=8))]
    sd = specvlm.accelerate((target, draft), policy=policy, capture=capture)
    assert sd.generate(**inputs, max_new_tokens=NEW).tolist() == ref
    stats = sd.last_stats
    assert stats.tree == DynamicTree(budget=8) and stats.tree_size == 8
    assert stats.captured == stats.target_captured == capture
    assert stats.calibration == 0.0  # chosen by the costs given, not by a measurement
    assert len(policy._dynamic_seen) == 2  # the call's own tokens per step learned


def test_dynamic_budget_arguments():
    target, draft = pair("llava_onevision")
    for bad in ((0,), "8", (8, 8), (True,), (300,)):
        with pytest.raises(ValueError, match="dynamic_budgets must be|DynamicTree.budget must"):
            AutoPolicy(dynamic_budgets=bad)
    with pytest.raises(ValueError, match="no dynamic_budgets with it"):
        AutoPolicy(dynamic_budgets=(8,), tree=chain(2))
    policy = AutoPolicy(dynamic_budgets=[16, 32])
    assert policy.dynamic_budgets == (16, 32)
    for kwargs, what in (
        ({"children": "sampled"}, 'children="sampled"'),
        ({"overlap": True}, "overlap=True"),
        ({"min_draft_confidence": 0.1}, "min_draft_confidence"),
    ):
        with pytest.raises(ValueError, match=r"AutoPolicy\(dynamic_budgets=...\): .*" + what):
            specvlm.accelerate((target, draft), policy=policy, **kwargs)


def test_a_dynamic_call_is_not_overlapped():
    """overlap="auto" overlaps where the draft has a GPU of its own, but not a call the
    policy gave a dynamic tree (its drafting is sequential)."""
    from types import SimpleNamespace

    from specvlm.dynamic_tree import DynamicTree
    from specvlm.overlap import overlapping

    run = SimpleNamespace(
        settings=SimpleNamespace(tree=DynamicTree(), speculate=True),
        stats=GenerationStats(),
        target_model=None,
        draft_model=None,
    )
    with overlapping(run, True, None, None):
        pass
    assert run.stats.overlap_reason == "a dynamic tree is drafted in sequence"


def test_a_policy_can_be_shared_between_decoders():
    target, draft = pair("llava_onevision")
    shared = AutoPolicy()
    inputs = tm.make_inputs("llava_onevision", target, seed=15)
    specvlm.accelerate((target, draft), policy=shared).generate(**inputs, max_new_tokens=4)
    sd = specvlm.accelerate((target, draft), policy=shared)
    sd.generate(**inputs, max_new_tokens=4)
    assert sd.policy is shared and sd.last_stats.calibration == 0.0


def test_calibration_measures_every_width_and_bucket():
    from specvlm import calibration
    from specvlm.attention import routed_attention

    target, draft = pair("qwen3_vl")
    fam = family_of(target)
    probes = [
        calibration.Probe("target", target, (16, 64), (1, 4, 9)),
        calibration.Probe("draft", draft, (32,), (1, 3)),
    ]
    with (
        torch.no_grad(),
        routed_attention(fam.decoder(target)),
        routed_attention(fam.decoder(draft)),
    ):
        measured = calibration.measure(fam, probes, repeats=2)
    assert set(measured) == {("target", 16), ("target", 64), ("draft", 32)}
    for (role, _), (prefill, row) in measured.items():
        assert prefill > 0 and set(row) == ({1, 4, 9} if role == "target" else {1, 3})
        assert all(s > 0 for s in row.values())
