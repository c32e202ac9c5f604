"""The oracles themselves, checked against brute-force definitions and their stated properties.

The kernel tests compare against these references, so the references must be right on their
own terms.
"""

import itertools
import math

import pytest
import torch

from specvlm_kernels import reference as ref


@pytest.mark.parametrize("total", [1, 2, 3, 7, 10, 33])
def test_spread_pick_counts_and_gaps(total):
    ranks = torch.arange(total)
    for count in range(total + 1):
        picked = ranks[ref.spread_pick(ranks, count, total)]
        assert picked.numel() == count
        if count >= 2:
            gaps = picked.diff()
            assert gaps.min() >= total // count and gaps.max() <= math.ceil(total / count)


def test_spread_pick_large_values_do_not_overflow():
    total = 131072
    ranks = torch.arange(total)
    assert int(ref.spread_pick(ranks, total - 1, total).sum()) == total - 1


@pytest.mark.parametrize("h,w", [(1, 1), (1, 5), (4, 1), (3, 5), (14, 14), (16, 28), (8, 8)])
def test_spatial_priority_is_a_permutation(h, w):
    prio = ref.spatial_priority(h, w)
    assert prio.shape == (h * w,)
    assert prio.unique().numel() == h * w


@pytest.mark.parametrize("side,k", [(8, 1), (8, 2), (16, 2), (4, 2)])
def test_spatial_priority_prefix_is_a_lattice(side, k):
    order = torch.argsort(ref.spatial_priority(side, side))[: 4**k]
    rows, cols = order // side, order % side
    stride = side // 2**k
    assert set(rows.tolist()) == set(range(0, side, stride))
    assert set(cols.tolist()) == set(range(0, side, stride))


@pytest.mark.parametrize(
    "h,w", [(1, 1), (2, 2), (3, 5), (4, 4), (7, 7), (8, 8), (14, 14), (16, 28), (27, 27)]
)
def test_spatial_priority_starts_in_the_middle(h, w):
    """One Stage-II token in a frame goes to its middle, not to its top-left corner."""
    first = int(torch.argsort(ref.spatial_priority(h, w))[0])
    assert (first // w, first % w) == (h // 2, w // 2)


def test_spatial_priority_centres_odd_frames():
    order = torch.argsort(ref.spatial_priority(14, 14))
    assert (order[0] // 14, order[0] % 14) == (7, 7)
    first9 = {(int(i) // 14, int(i) % 14) for i in order[:9]}
    assert first9 == set(itertools.product([3, 7, 11], [3, 7, 11]))


def _stage1_brute(row, keep, mass):
    vals = [float(x) for x in row.double()]
    order = sorted(range(len(vals)), key=lambda i: (-vals[i], i))
    target = mass * math.fsum(vals)
    if target <= 0:
        return 0
    acc = 0.0
    for m, i in enumerate(order, start=1):
        acc += vals[i]
        if acc >= target:
            return min(m, keep)
    return min(len(vals), keep)


@pytest.mark.parametrize("mass", [0.0, 0.1, 0.4, 0.9, 1.0])
def test_stage1_count_matches_brute_force(mass):
    gen = torch.Generator().manual_seed(1)
    for nv in (1, 2, 5, 17, 64):
        scores = torch.rand(3, nv, generator=gen).pow(3)
        for keep in (0, 1, nv // 2, nv):
            got = ref.stage1_count_ref(scores, keep, mass)
            want = [_stage1_brute(row, keep, mass) for row in scores]
            assert got.tolist() == want


def test_stage1_exact_ties():
    scores = torch.full((1, 10), 0.125)
    assert ref.stage1_count_ref(scores, 10, 0.4).item() == 4  # 4 * 0.125 = 0.5 >= 0.4 * 1.25
    assert ref.stage1_count_ref(scores, 3, 0.4).item() == 3  # capped at keep


def test_frame_quotas_properties():
    gen = torch.Generator().manual_seed(2)
    for _ in range(200):
        t = int(torch.randint(1, 7, (1,), generator=gen))
        free = torch.randint(0, 9, (1, t), generator=gen)
        budget = torch.randint(0, int(free.sum()) + 1, (1,), generator=gen)
        q = ref.frame_quotas_ref(free, budget)[0]
        assert int(q.sum()) == int(budget)
        assert bool((q >= 0).all()) and bool((q <= free[0]).all())
        # max-min fair: a frame may trail another by two or more only if it is full
        for a, b in itertools.permutations(range(t), 2):
            if q[a] + 1 < q[b]:
                assert q[a] == free[0, a]


def test_frame_quotas_even_without_saturation():
    q = ref.frame_quotas_ref(torch.full((1, 7), 100), torch.tensor([45]))[0]
    assert int(q.sum()) == 45 and int(q.max() - q.min()) <= 1


def test_select_reference_small_example():
    scores = torch.tensor([[0.0, 0.9, 0.0, 0.0, 0.05, 0.0, 0.0, 0.05]])
    # Stage I takes index 1 (0.9 >= 0.4 * 1.0). Stage II spreads 2 more over the 7 free
    # positions [0, 2, 3, 4, 5, 6, 7]: centred picks land on free ranks 1 and 5 (ideal 1.75, 5.25).
    idx = ref.select_video_tokens_ref(scores, 3)
    assert idx.tolist() == [[1, 2, 6]]


def test_tree_attention_ref_matches_per_node_loop():
    gen = torch.Generator().manual_seed(3)
    b, hq, hk, n, length, d = 2, 4, 2, 5, 9, 8
    q = torch.randn(b, hq, n, d, generator=gen, dtype=torch.float64)
    k = torch.randn(b, hk, length, d, generator=gen, dtype=torch.float64)
    v = torch.randn(b, hk, length, d, generator=gen, dtype=torch.float64)
    mask = torch.rand(b, n, n, generator=gen) < 0.5
    out = ref.tree_attention_ref(q, k, v, mask)
    prefix = length - n
    for bi, h, i in itertools.product(range(b), range(hq), range(n)):
        cols = list(range(prefix)) + [prefix + j for j in range(n) if mask[bi, i, j]]
        kk, vv = k[bi, h // 2, cols], v[bi, h // 2, cols]
        p = torch.softmax(kk @ q[bi, h, i] / math.sqrt(d), dim=0)
        torch.testing.assert_close(out[bi, h, i], p @ vv)


def test_tree_attention_ref_lengths_match_per_node_loop():
    """With ``lengths``, row b sees only its first lengths[b] keys (clamped to [N, L]); the
    nodes are the last N of those."""
    gen = torch.Generator().manual_seed(5)
    b, hq, hk, n, buf, d = 3, 4, 2, 3, 12, 8
    q = torch.randn(b, hq, n, d, generator=gen, dtype=torch.float64)
    k = torch.randn(b, hk, buf, d, generator=gen, dtype=torch.float64)
    v = torch.randn(b, hk, buf, d, generator=gen, dtype=torch.float64)
    mask = torch.rand(b, n, n, generator=gen) < 0.6
    lengths = torch.tensor([n, 7, 99])  # 99 is clamped to the buffer, 12
    out = ref.tree_attention_ref(q, k, v, mask, lengths=lengths)
    for bi, h, i in itertools.product(range(b), range(hq), range(n)):
        length = min(int(lengths[bi]), buf)
        prefix = length - n
        cols = list(range(prefix)) + [prefix + j for j in range(n) if mask[bi, i, j]]
        if not cols:
            assert out[bi, h, i].abs().max() == 0
            continue
        kk, vv = k[bi, h // 2, cols], v[bi, h // 2, cols]
        p = torch.softmax(kk @ q[bi, h, i] / math.sqrt(d), dim=0)
        torch.testing.assert_close(out[bi, h, i], p @ vv)
    # one length for every row (0-d) equals slicing the buffer
    same = ref.tree_attention_ref(q, k, v, mask, lengths=torch.tensor(7))
    torch.testing.assert_close(same, ref.tree_attention_ref(q, k[:, :, :7], v[:, :, :7], mask))


def test_tree_attention_ref_row_that_sees_nothing_is_zero():
    q = torch.randn(1, 1, 2, 4, dtype=torch.float64)
    k = v = torch.randn(1, 1, 2, 4, dtype=torch.float64)
    mask = torch.tensor([[False, False], [True, True]])
    out = ref.tree_attention_ref(q, k, v, mask)
    assert out[0, 0, 0].abs().max() == 0 and torch.isfinite(out).all()


def test_video_scores_ref_matches_per_row_loop():
    gen = torch.Generator().manual_seed(4)
    b, hq, hk, lq, lk, d = 1, 6, 3, 3, 11, 8
    q = torch.randn(b, hq, lq, d, generator=gen, dtype=torch.float64)
    k = torch.randn(b, hk, lk, d, generator=gen, dtype=torch.float64)
    q_offset = 4
    out = ref.video_attention_scores_ref(q, k, 2, 9, q_offset=q_offset)
    acc = torch.zeros(lk, dtype=torch.float64)
    for h, i in itertools.product(range(hq), range(lq)):
        visible = q_offset + i + 1
        p = torch.softmax(k[0, h // 2, :visible] @ q[0, h, i] / math.sqrt(d), dim=0)
        acc[:visible] += p
    torch.testing.assert_close(out[0], (acc / (hq * lq))[2:9])
