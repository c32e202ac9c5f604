"""specvlm.sampler: lossless sampling verification of token trees.

The toy "models" map a prefix (a tuple of token ids) to a fixed random distribution over a small
vocabulary. The exact tests enumerate every outcome of one verification step (every draft draw
of sampled children, every accept / reject branch, every bonus token), complete the emitted
tokens with the target's own autoregressive distribution to ``depth + 1`` tokens, and compare the
joint law of those tokens with the target's autoregressive joint.
"""

from collections import Counter, defaultdict

import pytest
import torch

import specvlm.sampler as sampler
from specvlm.sampler import accept_greedy, accept_sampled, node_outcomes, sample_children
from specvlm.trees import Tree, chain, default_tree

V = 5
F64 = torch.float64


class Toy:
    """A fixed random next-token distribution for every prefix: ``Toy(salt)(prefix) -> [vocab]``.

    ``keep``: zero all but the ``keep`` most likely tokens (top-k truncation); ``top_p``: keep the
    smallest most-likely set holding ``top_p`` of the mass (top-p truncation)."""

    def __init__(self, salt, vocab=V, keep=None, top_p=None):
        self.salt, self.vocab, self.keep, self.top_p = salt, vocab, keep, top_p
        self.cache = {}

    def __call__(self, prefix):
        if prefix not in self.cache:
            seed = self.salt
            for t in prefix:
                seed = (seed * 1_000_003 + t + 7) % (2**61 - 1)
            g = torch.Generator().manual_seed(seed)
            w = torch.rand(self.vocab, generator=g, dtype=F64) ** 2 + 0.01
            order = w.argsort(descending=True)
            if self.keep is not None:
                w[order[self.keep :]] = 0
            if self.top_p is not None:
                csum = (w[order] / w.sum()).cumsum(0)
                w[order[int((csum < self.top_p).sum()) + 1 :]] = 0
            self.cache[prefix] = w / w.sum()
        return self.cache[prefix]


def kids_of(tree):
    """{row: {rank: node}}, row 0 the root and row i + 1 node i."""
    kids = defaultdict(dict)
    for i, (parent, path) in enumerate(zip(tree.parents, tree.paths, strict=True)):
        kids[parent + 1][path[-1]] = i
    return kids


def child_draws(q, m, sampled):
    """Every way of filling ``m`` child slots from the draft distribution ``q`` with its
    probability: the top-``m`` ranks (one way) for fixed children, else every ordered sequence of
    distinct tokens drawn without replacement, ``-1`` once the support is exhausted."""
    if not sampled:
        order = q.argsort(descending=True, stable=True).tolist()
        return [(tuple(order[r] if r < len(order) else -1 for r in range(m)), 1.0)]
    out = []

    def rec(drawn, prob):
        if len(drawn) == m:
            out.append((drawn, prob))
            return
        rest = [x for x in range(len(q)) if x not in drawn and q[x] > 0]
        if not rest:
            out.append((drawn + (-1,) * (m - len(drawn)), prob))
            return
        mass = sum(float(q[x]) for x in rest)
        for x in rest:
            rec(drawn + (x,), prob * float(q[x]) / mass)

    rec((), 1.0)
    return out


def step_law(tree, target, draft, sampled, outcomes=node_outcomes, prefix=()):
    """Exact law of the tokens one verification step emits (accepted path + bonus) after
    ``prefix``: ``{tokens: probability}``."""
    kids = kids_of(tree)
    memo = {}

    def sub(row, ctx):
        if (row, ctx) in memo:
            return memo[(row, ctx)]
        p = target(ctx)
        out = defaultdict(float)
        mine = kids.get(row, {})
        if not mine:
            for x in range(len(p)):
                out[(x,)] += float(p[x])
        else:
            m = max(mine) + 1
            q = draft(ctx)
            for toks, pd in child_draws(q, m, sampled):
                slot = torch.tensor([[toks[r] if r in mine else -1 for r in range(m)]])
                w = outcomes(p[None], slot, q[None] if sampled else None)[0].tolist()
                for r in range(m):
                    if w[r] > 0:
                        for suffix, ps in sub(mine[r] + 1, ctx + (toks[r],)).items():
                            out[(toks[r],) + suffix] += pd * w[r] * ps
                for x in range(len(p)):
                    if w[m + x] > 0:
                        out[(x,)] += pd * w[m + x]
        memo[(row, ctx)] = dict(out)
        return memo[(row, ctx)]

    return sub(0, prefix)


def complete(law, target, horizon, prefix=()):
    """Extend every sequence of ``law`` with the target's own samples to ``horizon`` tokens."""
    out = defaultdict(float)

    def rec(seq, prob):
        if len(seq) == horizon:
            out[seq] += prob
            return
        p = target(prefix + seq).tolist()
        for x, px in enumerate(p):
            if px > 0:
                rec(seq + (x,), prob * px)

    for seq, prob in law.items():
        rec(seq, prob)
    return dict(out)


def tv(a, b):
    return 0.5 * sum(abs(a.get(s, 0.0) - b.get(s, 0.0)) for s in set(a) | set(b))


def distance(tree, target, draft, sampled, outcomes=node_outcomes, prefix=()):
    """Total variation between the target's joint of ``depth + 1`` tokens and that of one
    verification step completed by the target."""
    horizon = tree.depth + 1
    law = step_law(tree, target, draft, sampled, outcomes, prefix)
    return tv(complete(law, target, horizon, prefix), complete({(): 1.0}, target, horizon, prefix))


TREES = {
    "chain1": chain(1),
    "chain3": chain(3),
    "tree5": Tree.from_paths([[0], [1], [0, 0], [0, 1], [1, 0]]),
    "root3": Tree.from_paths([[0], [1], [2], [0, 0], [2, 0], [2, 1]]),
    "root6": Tree.from_paths([[r] for r in range(6)] + [[0, 0], [1, 0]]),  # 6 > V slots
    "gap": Tree.from_paths([[0], [2], [0, 0], [0, 2]]),  # ranks 1 missing
}

# (target, draft): full distributions, top-k / top-p truncated targets, drafts with zeros (a
# support of 2 is exhausted by nodes with 3 or more children), both truncated.
MODELS = {
    "full": (Toy(1), Toy(2)),
    "target_topk": (Toy(3, keep=3), Toy(4)),
    "target_topp": (Toy(5, top_p=0.6), Toy(6)),
    "draft_zeros": (Toy(7), Toy(8, keep=2)),
    "both_zeros": (Toy(9, keep=2), Toy(10, keep=3)),
}


@pytest.mark.parametrize("sampled", [False, True], ids=["fixed", "sampled"])
@pytest.mark.parametrize("models", list(MODELS), ids=list(MODELS))
@pytest.mark.parametrize("name", list(TREES))
def test_one_step_is_exactly_the_target(name, models, sampled):
    target, draft = MODELS[models]
    assert distance(TREES[name], target, draft, sampled, prefix=(3,)) < 1e-6


def test_draft_equal_to_target_accepts_every_child():
    """Sanity of the enumeration itself: a draft equal to the target is lossless too and accepts
    every sampled child at a chain with probability 1."""
    target = Toy(11)
    tree = chain(3)
    assert distance(tree, target, target, True) < 1e-6
    law = step_law(tree, target, target, True)
    assert abs(sum(p for s, p in law.items() if len(s) == 4) - 1.0) < 1e-12


# ---------------------------------------------------------------------------------------------
# Wrong verifiers: the same exact check must reject them.


def _rowwise(rule):
    """Turn ``rule(p, tokens, q) -> list`` (one row, Python floats) into a ``node_outcomes``-like
    function of ``[R, V]`` / ``[R, K]`` tensors."""

    def outcomes(target_probs, children, draft_probs=None):
        rows = []
        for i in range(target_probs.shape[0]):
            q = None if draft_probs is None else draft_probs[i].tolist()
            rows.append(rule(target_probs[i].tolist(), children[i].tolist(), q))
        return torch.tensor(rows, dtype=F64)

    return outcomes


def reference_rule(p, toks, q, *, conditional=True, renormalise=True, residual_bonus=True):
    """Plain-Python sequential rule for one row. With its defaults, the correct one (fixed
    children when ``q`` is None); each flag turned off makes a classic mistake: judging child
    ``i`` against ``q`` instead of ``q`` without the earlier children, not renormalising the
    residual, drawing the bonus from ``p`` instead of the residual."""
    vocab = len(p)
    s = sum(p)
    p = [v / s for v in p]
    if q is None:
        seen, accept = set(), []
        for x in toks:
            accept.append(p[x] if x >= 0 and x not in seen else 0.0)
            seen.add(x)
        left = 1.0 - sum(accept)
        if residual_bonus:
            return accept + [0.0 if x in seen else p[x] for x in range(vocab)]
        return accept + [left * v for v in p]
    s = sum(q)
    q = [v / s for v in q]
    r, reach, removed, live, accept = p[:], 1.0, set(), True, []
    for x in toks:
        rest = [0.0 if v in removed else q[v] for v in range(vocab)]
        mass = sum(rest)
        q_i = [v / mass if mass > 0 else 0.0 for v in rest] if conditional else q
        if not live or x < 0 or q_i[x] <= 0:
            live = False
            accept.append(0.0)
            continue
        a = min(1.0, r[x] / q_i[x])
        accept.append(reach * a)
        diff = [max(r[v] - q_i[v], 0.0) for v in range(vocab)]
        d = sum(diff)
        if d <= 0:
            reach = 0.0
        else:
            r = [v / d for v in diff] if renormalise else diff
            reach *= 1.0 - a
        removed.add(x)
    if not residual_bonus:
        return accept + [reach * v for v in p]
    d = sum(r)
    return accept + [reach * v / d for v in r]


def accept_all_rule(p, toks, q):
    """Accept the first drafted child whatever the target says."""
    for j, x in enumerate(toks):
        if x >= 0 and (q is None or q[x] > 0):
            return [1.0 if i == j else 0.0 for i in range(len(toks))] + [0.0] * len(p)
    return [0.0] * len(toks) + [v / sum(p) for v in p]


WRONG = {
    "accept_all": _rowwise(accept_all_rule),
    "bonus_from_p": _rowwise(lambda p, t, q: reference_rule(p, t, q, residual_bonus=False)),
    "no_renormalise": _rowwise(lambda p, t, q: reference_rule(p, t, q, renormalise=False)),
    "q_not_conditional": _rowwise(lambda p, t, q: reference_rule(p, t, q, conditional=False)),
}


@pytest.mark.parametrize(
    "sampled,wrong",
    [
        (False, "accept_all"),
        (False, "bonus_from_p"),
        (True, "accept_all"),
        (True, "bonus_from_p"),
        (True, "no_renormalise"),
        (True, "q_not_conditional"),
    ],
)
def test_exact_check_rejects_wrong_verifiers(sampled, wrong):
    target, draft = MODELS["full"]
    worst = max(
        distance(TREES[name], target, draft, sampled, WRONG[wrong])
        for name in ("chain3", "tree5", "root3")
    )
    assert worst > 0.01, worst


def test_reference_rule_matches_node_outcomes():
    """The plain-Python rule (used above to build the wrong variants) is node_outcomes."""
    g = torch.Generator().manual_seed(0)
    for sampled in (False, True):
        for _ in range(200):
            p = torch.rand(6, generator=g, dtype=F64) * (torch.rand(6, generator=g) > 0.3)
            p[torch.randint(6, (1,), generator=g)] += 0.1
            q = torch.rand(6, generator=g, dtype=F64) * (torch.rand(6, generator=g) > 0.3)
            q[torch.randint(6, (1,), generator=g)] += 0.1
            toks = torch.randint(-1, 6, (4,), generator=g)
            got = node_outcomes(p[None], toks[None], q[None] if sampled else None)[0]
            want = reference_rule(p.tolist(), toks.tolist(), q.tolist() if sampled else None)
            assert torch.allclose(got, torch.tensor(want, dtype=F64), atol=1e-12)
            assert abs(float(got.sum()) - 1.0) < 1e-12


# ---------------------------------------------------------------------------------------------
# Statistical, end to end: seeded runs of sample_children + accept_sampled, as the generate loop
# would call them, against the exact joint of the first depth + 1 tokens with a G-test.

ALPHA = 1e-3
STEPS = 4000
STAT_TREE = TREES["tree5"]  # depth 2: the first 3 tokens, 125 cells before pooling
STAT_PREFIX = (1,)


def run_steps(tree, target, draft, sampled, steps, seed, prefix=()):
    """Counts of the first ``depth + 1`` tokens over ``steps`` seeded verification steps, each
    completed with the target's own samples."""
    g = torch.Generator().manual_seed(seed)
    horizon = tree.depth + 1
    k = tree.max_rank() + 1
    n = tree.size
    counts = Counter()
    fixed = None
    for _ in range(steps):
        ctx = {-1: prefix}
        tokens = [0] * n
        if not sampled and fixed is not None:
            tokens, ctx = fixed
        else:
            for d in range(1, tree.depth + 1):
                nodes = tree.nodes_at_depth(d)
                parents = sorted({tree.parents[i] for i in nodes})
                rows = torch.stack(
                    [draft(ctx[a]) if ctx[a] is not None else _flat() for a in parents]
                )
                if sampled:
                    drawn = sample_children(rows, k, g).tolist()
                else:
                    drawn = rows.argsort(dim=-1, descending=True, stable=True)[:, :k].tolist()
                for i in nodes:
                    a = tree.parents[i]
                    tok = drawn[parents.index(a)][tree.paths[i][-1]]
                    tokens[i] = tok
                    ctx[i] = ctx[a] + (tok,) if tok >= 0 and ctx[a] is not None else None
            fixed = (tokens, ctx)
        contexts = [ctx[i] for i in range(-1, n)]
        probs = torch.stack([target(c) if c is not None else _flat() for c in contexts])
        drafts = torch.stack([draft(c) if c is not None else _flat() for c in contexts])
        accepted, bonus = accept_sampled(
            tree, tokens, probs, draft_probs=drafts if sampled else None, generator=g
        )
        seq = tuple(tokens[i] for i in accepted) + (bonus,)
        while len(seq) < horizon:
            seq += (int(torch.multinomial(target(prefix + seq), 1, generator=g)),)
        counts[seq[:horizon]] += 1
    return counts


def _flat():
    return torch.full((V,), 1.0 / V, dtype=F64)


def pooled(expected, *laws):
    """Cells with expected count >= 5, plus one pooled cell of the others: lists per law."""
    big = sorted(s for s, e in expected.items() if e >= 5)
    out = []
    for law in (expected, *laws):
        cells = [law.get(s, 0.0) for s in big]
        out.append(cells + [sum(law.values()) - sum(cells)])
    return out


def g_test(counts, law):
    """p-value of the G-test of ``counts`` against the probabilities ``law``."""
    total = sum(counts.values())
    e, o = pooled({s: total * p for s, p in law.items()}, counts)
    stat = sum(
        2 * oi * torch.tensor(oi / ei).log().item() for oi, ei in zip(o, e, strict=True) if oi > 0
    )
    dof = len(e) - 1
    return torch.special.gammaincc(torch.tensor(dof / 2, dtype=F64), torch.tensor(stat / 2)).item()


def target_joint(tree, target, prefix):
    return complete({(): 1.0}, target, tree.depth + 1, prefix)


@pytest.mark.parametrize("sampled", [False, True], ids=["fixed", "sampled"])
@pytest.mark.parametrize("models", ["target_topp", "draft_zeros"])
def test_statistical_end_to_end(models, sampled):
    target, draft = MODELS[models]
    counts = run_steps(STAT_TREE, target, draft, sampled, STEPS, seed=123, prefix=STAT_PREFIX)
    assert g_test(counts, target_joint(STAT_TREE, target, STAT_PREFIX)) > ALPHA


WRONG_STAT = "q_not_conditional"  # total variation 0.063 from the target's joint here
STAT_MODELS = "target_topp"


def test_statistical_test_rejects_a_wrong_verifier(monkeypatch):
    """The same end-to-end run with node_outcomes swapped for a subtly wrong rule (the i.i.d.
    acceptance ratio applied to children drawn without replacement) is rejected."""
    target, draft = MODELS[STAT_MODELS]
    monkeypatch.setattr(sampler, "node_outcomes", WRONG[WRONG_STAT])
    counts = run_steps(STAT_TREE, target, draft, True, STEPS, seed=123, prefix=STAT_PREFIX)
    assert g_test(counts, target_joint(STAT_TREE, target, STAT_PREFIX)) < ALPHA


def test_statistical_power():
    """Power of the G-test above against the wrong rule at ALPHA, from the exact laws: the
    statistic is approximately noncentral chi-square with noncentrality ``2 n KL(wrong || target)``
    over the pooled cells; its tail beyond the ALPHA critical value, by Monte Carlo. At 4000
    steps: 11 pooled cells (10 degrees of freedom), noncentrality 70.7, power 0.9999 (0.995 at
    3000 steps)."""
    target, draft = MODELS[STAT_MODELS]
    null = target_joint(STAT_TREE, target, STAT_PREFIX)
    law = step_law(STAT_TREE, target, draft, True, WRONG[WRONG_STAT], STAT_PREFIX)
    alt = complete(law, target, STAT_TREE.depth + 1, STAT_PREFIX)
    e, a = pooled({s: STEPS * p for s, p in null.items()}, {s: STEPS * p for s, p in alt.items()})
    nc = sum(
        2 * ai * torch.tensor(ai / ei).log().item() for ai, ei in zip(a, e, strict=True) if ai > 0
    )
    dof = len(e) - 1
    lo, hi = 0.0, 10.0 * dof + 100.0  # the ALPHA critical value by bisection
    for _ in range(100):
        mid = (lo + hi) / 2
        tail = torch.special.gammaincc(torch.tensor(dof / 2, dtype=F64), torch.tensor(mid / 2))
        lo, hi = (mid, hi) if tail > ALPHA else (lo, mid)
    z = torch.randn(20_000, dof, generator=torch.Generator().manual_seed(0), dtype=F64)
    z[:, 0] += nc**0.5
    power = float(((z**2).sum(-1) > hi).double().mean())
    assert power > 0.99, (nc, dof, power)


# Acceptance (expected tokens per step, accepted + bonus, from the exact step laws): on a
# correlated toy pair over 8 tokens (target softmax(t * z), draft softmax(t * (z + 0.5 e)), z and
# e standard normal per prefix), fixed top-k children (a) against sampled children (b):
#   t = 1.0: chain of 3: a 1.37, b 3.10; tree5: a 1.78, b 2.72; root3: a 1.79, b 2.68
#   t = 2.5: chain of 3: a 1.64, b 2.25; tree5: a 2.37, b 2.59; root3: a 2.09, b 2.46
# Sampled children win more at higher entropy; at lower entropy top-k children catch up.

# ---------------------------------------------------------------------------------------------
# Greedy equivalence


def test_accept_greedy_semantics():
    tree = Tree.from_paths([[0], [1], [0, 0], [1, 0], [0, 0, 0]])
    tokens = [5, 7, 9, 3, 4]
    assert accept_greedy(tree, tokens, torch.tensor([5, 9, 0, 0, 0, 0])) == ([0, 2], 0)
    assert accept_greedy(tree, tokens, torch.tensor([5, 9, 0, 4, 0, 1])) == ([0, 2, 4], 1)
    assert accept_greedy(tree, tokens, torch.tensor([7, 0, 3, 0, 6, 0])) == ([1, 3], 6)
    assert accept_greedy(tree, tokens, torch.tensor([8, 0, 0, 0, 0, 0])) == ([], 8)
    # repeated sibling tokens: the first in rank order; negative tokens are never accepted
    assert accept_greedy(tree, [5, 5, 9, 3, -1], torch.tensor([5, 2, 2, 2, 2, 2])) == ([0], 2)
    assert accept_greedy(tree, [-1, 7, 9, 3, 4], torch.tensor([-1, 0, 0, 0, 0, 0])) == ([], -1)


@pytest.mark.parametrize("tree", [chain(4), TREES["tree5"], TREES["gap"], default_tree()])
def test_one_hot_target_gives_greedy(tree, device):
    vocab = 16
    g = torch.Generator().manual_seed(1)
    gen = torch.Generator(device=device).manual_seed(2)
    k = tree.max_rank() + 1
    kids = kids_of(tree)
    after_gap = [
        any(r not in kids[a + 1] for r in range(path[-1]))
        for a, path in zip(tree.parents, tree.paths, strict=True)
    ]
    assert any(after_gap) == (tree is TREES["gap"])
    for _ in range(30):
        perms = [torch.randperm(vocab, generator=g)[:k].tolist() for _ in range(tree.size + 1)]
        tokens = [perms[a + 1][path[-1]] for a, path in zip(tree.parents, tree.paths, strict=True)]
        argmax = []
        for row in range(tree.size + 1):
            mine = list(kids.get(row, {}).values())
            if mine and torch.rand(1, generator=g) < 0.75:
                argmax.append(tokens[mine[int(torch.randint(len(mine), (1,), generator=g))]])
            else:
                argmax.append(int(torch.randint(vocab, (1,), generator=g)))
        argmax = torch.tensor(argmax)
        probs = torch.nn.functional.one_hot(argmax, vocab).float().to(device)
        drafts = torch.softmax(torch.randn(tree.size + 1, vocab, generator=g), -1).to(device)
        want = accept_greedy(tree, tokens, argmax)
        assert accept_sampled(tree, tokens, probs, generator=gen) == want
        # sampled children: the scan of siblings stops at a missing rank (the tree "gap")
        scanned = [-1 if after_gap[i] else t for i, t in enumerate(tokens)]
        want = accept_greedy(tree, scanned, argmax)
        assert accept_sampled(tree, tokens, probs, draft_probs=drafts, generator=gen) == want


# ---------------------------------------------------------------------------------------------
# Edge cases


def test_vocabulary_of_one():
    tree = chain(3)
    ones = torch.ones(4, 1)
    assert accept_sampled(tree, [0, 0, 0], ones) == ([0, 1, 2], 0)
    assert accept_sampled(tree, [0, 0, 0], ones, draft_probs=ones) == ([0, 1, 2], 0)
    assert sample_children(torch.ones(2, 1), 3).tolist() == [[0, -1, -1], [0, -1, -1]]
    root3 = Tree.from_paths([[0], [1], [2]])
    assert accept_sampled(root3, [0, -1, -1], ones, draft_probs=ones) == ([0], 0)
    assert accept_sampled(root3, [0, -1, -1], ones) == ([0], 0)


def test_sample_children_exhausts_the_support():
    q = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]).repeat(100, 1)
    got = sample_children(q, 6, torch.Generator().manual_seed(0))
    assert got.shape == (200, 6)
    assert set(map(tuple, got[0::2].tolist())) == {(0, 1, -1, -1, -1, -1), (1, 0, -1, -1, -1, -1)}
    assert set(map(tuple, got[1::2].tolist())) == {(3, -1, -1, -1, -1, -1)}


def test_sample_children_draws_sequentially_without_replacement():
    """Ordered pairs of the first two draws against their exact law (G-test at ALPHA)."""
    q = torch.tensor([0.45, 0.3, 0.15, 0.1, 0.0], dtype=F64)
    got = sample_children(q.repeat(20_000, 1), 2, torch.Generator().manual_seed(3))
    counts = Counter(map(tuple, got.tolist()))
    law = {pair: prob for pair, prob in child_draws(q, 2, True)}
    assert set(counts) <= set(law)
    assert g_test(counts, law) > ALPHA


def test_children_without_probability():
    p = torch.tensor([[0.0, 0.5, 0.3, 0.2]], dtype=F64)
    q = torch.tensor([[0.6, 0.0, 0.4, 0.0]], dtype=F64)
    # fixed children: a child the target rules out is never accepted; the rest keep p
    w = node_outcomes(p, torch.tensor([[0, 2, 1]]))[0]
    assert w.tolist() == [0.0, 0.3, 0.5, 0.0, 0.0, 0.0, 0.2]
    # sampled children: a child the draft gives no probability ends the scan (bonus from r)
    w = node_outcomes(p, torch.tensor([[1, 2]]), q)[0]
    assert w[:2].tolist() == [0.0, 0.0] and torch.allclose(w[2:], p[0])
    w = node_outcomes(p, torch.tensor([[2, 1, 0]]), q)[0]
    assert w[1:3].tolist() == [0.0, 0.0] and abs(float(w.sum()) - 1) < 1e-12
    assert float(w[0]) == pytest.approx(min(1.0, 0.3 / 0.4))
    # an all-zero draft row (a leaf's unused row, say): nothing accepted, bonus from p
    w = node_outcomes(p, torch.tensor([[1]]), torch.zeros(1, 4, dtype=F64))[0]
    assert w[0] == 0 and torch.allclose(w[1:], p[0])
    # draft equal to target: the first child is always accepted, no rejection mass is left
    w = node_outcomes(p, torch.tensor([[2, 1]]), p)[0]
    assert w.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_same_seed_same_steps(device):
    tree = TREES["root3"]
    target, draft = Toy(20, vocab=50), Toy(21, vocab=50)
    contexts = [(), (0,), (1,), (2,), (0, 0), (2, 0), (2, 1)]
    probs = torch.stack([target(c) for c in contexts]).to(device)
    drafts = torch.stack([draft(c) for c in contexts]).to(device)
    tokens = [0, 1, 2, 0, 0, 1]

    def run(seed):
        gen = torch.Generator(device=device).manual_seed(seed)
        out = []
        for _ in range(40):
            out.append(accept_sampled(tree, tokens, probs, generator=gen))
            out.append(accept_sampled(tree, tokens, probs, draft_probs=drafts, generator=gen))
            out.append(sample_children(drafts, 3, gen).tolist())
        return out

    assert run(5) == run(5)
    assert run(5) != run(6)
    torch.manual_seed(7)
    first = [accept_sampled(tree, tokens, probs.cpu()) for _ in range(20)]
    torch.manual_seed(7)
    assert [accept_sampled(tree, tokens, probs.cpu()) for _ in range(20)] == first


def test_bad_shapes():
    tree = chain(2)
    with pytest.raises(ValueError, match="one token per node"):
        accept_sampled(tree, [0], torch.ones(3, 4))
    with pytest.raises(ValueError, match="N \\+ 1 = 3"):
        accept_sampled(tree, [0, 1], torch.ones(2, 4))
    with pytest.raises(ValueError, match="draft_probs"):
        accept_sampled(tree, [0, 1], torch.ones(3, 4), draft_probs=torch.ones(3, 5))
    with pytest.raises(ValueError, match="target_argmax"):
        accept_greedy(tree, [0, 1], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="k must be"):
        sample_children(torch.ones(2, 4), 0)
    with pytest.raises(ValueError, match="\\[R, V\\]"):
        sample_children(torch.ones(4), 2)
