"""specvlm_kernels.token_select: Triton kernel vs the plain-PyTorch reference, plus the
properties of the selection checked directly.

Indices must be bit-identical to ``select_video_tokens_ref``. Stage I compares fp64 prefix sums
with ``mass * total``; the kernel sums in chunk order, the reference in sorted order, so the two
can only disagree when a partial sum lies within fp64 rounding of the target. The inputs here
make every fp64 sum exact, so the order cannot matter: ``torch.rand`` draws multiples of
2^-24 in [0, 1) (skewed variants are rounded back to that grid), and any sum of fewer than
2^29 of them fits in 53 bits. fp16 values are multiples of 2^-24 as well. One test uses
unrounded softmax scores, where agreement is expected but not guaranteed by construction.

On the CPU the kernels run under the Triton interpreter (conftest sets TRITON_INTERPRET=1):
rows of at most a few hundred tokens, with small chunk and block sizes and other radix digit
widths forced in some tests, so the multi-program paths (partial histograms reduced over many
chunks, Stage-I / tie / free counts before a chunk, frame chunks, output slots) are exercised.
"""

from __future__ import annotations

import importlib
import itertools
import math
import os

import pytest
import torch

from specvlm_kernels import prune_video_tokens, select_video_tokens
from specvlm_kernels import reference as ref
from specvlm_kernels._dispatch import TRITON, backend_for
from tests.kernels._helpers import nan_filled

ts = importlib.import_module("specvlm_kernels.token_select")

MASSES = (0.0, 0.1, 0.4, 0.9, 1.0)


# --------------------------------------------------------------------------------------------
# Inputs and direct checks
# --------------------------------------------------------------------------------------------
def exact_scores(b, nv, gen, *, skew=1.0, device="cpu", dtype=torch.float32):
    """Scores on the 2^-24 grid (exact fp64 sums). ``skew > 1`` gives an attention-like spread:
    a few large values, many tiny ones, and exact zeros."""
    s = torch.rand(b, nv, generator=gen)
    if skew != 1.0:
        s = torch.floor(s.pow(skew) * 2**24) / 2**24
    return s.to(device=device, dtype=dtype)


def stage1_brute(row: torch.Tensor, keep: int, mass: float) -> list[int]:
    """Stage-I token indices of one row, from the definition (exact inputs: fsum == cumsum)."""
    vals = [float(v) for v in row.double()]
    order = sorted(range(len(vals)), key=lambda i: (-vals[i], i))
    target = mass * math.fsum(vals)
    if target <= 0:
        return []
    acc, m = 0.0, len(vals)
    for k, i in enumerate(order, start=1):
        acc += vals[i]
        if acc >= target:
            m = k
            break
    return order[: min(m, keep)]


def check_properties(idx, scores, keep, mass, grid):
    """What the selection must satisfy, checked without the reference."""
    nb, nv = scores.shape
    assert idx.dtype == torch.int64 and idx.shape == (nb, keep)
    for b in range(nb):
        row = idx[b].cpu()
        chosen = row.tolist()
        assert all(0 <= i < nv for i in chosen)
        assert all(x < y for x, y in itertools.pairwise(chosen)), "not ascending/unique"
        stage1 = stage1_brute(scores[b].cpu(), keep, mass)
        assert set(stage1) <= set(chosen), "a Stage-I token is missing"
        stage2 = sorted(set(chosen) - set(stage1))
        free = [i for i in range(nv) if i not in set(stage1)]
        if grid is None:
            # spread over the free tokens: gaps of floor/ceil(free / picks) free ranks
            ranks = [free.index(i) for i in stage2]
            if len(ranks) >= 2:
                gaps = [y - x for x, y in itertools.pairwise(ranks)]
                assert min(gaps) >= len(free) // len(ranks)
                assert max(gaps) <= math.ceil(len(free) / len(ranks))
            continue
        t, h, w = grid
        prio = torch.argsort(ref.spatial_priority(h, w)).tolist()
        s1 = set(stage1)
        quotas, frees = [], []
        for f in range(t):
            frame = [f * h * w + p for p in prio]  # priority order
            frame_free = [i for i in frame if i not in s1]
            picks = [i for i in frame_free if i in set(stage2)]
            quotas.append(len(picks))
            frees.append(len(frame_free))
            # a frame takes its first free positions in priority order
            assert picks == frame_free[: len(picks)]
        assert sum(quotas) == keep - len(stage1)
        for a, c in itertools.permutations(range(t), 2):
            if quotas[a] + 1 < quotas[c]:  # only a full frame may trail by two or more
                assert quotas[a] == frees[a]


def check_against_reference(scores, keep, mass, grid, *, properties=True, **launch):
    """The public function (or, with ``launch`` overrides such as ``block``, ``chunk`` or
    ``radix_bits``, the launcher) against the reference: identical indices."""
    if not launch:
        got = select_video_tokens(scores, keep, mass=mass, grid=grid)
    else:
        got = ts._launch_select(scores, keep, mass, grid, **launch)
    want = ref.select_video_tokens_ref(scores, keep, mass=mass, grid=grid)
    assert torch.equal(got.cpu(), want.cpu()), (
        f"keep={keep} mass={mass} grid={grid} launch={launch}\n got {got.tolist()}\n"
        f"want {want.tolist()}"
    )
    if properties:
        check_properties(got, scores, keep, mass, grid)
    return got


def keep_values(nv, gen, count):
    """0, nv and a few random budgets in between (always including a ~10% one)."""
    vals = {0, nv, max(1, nv // 10)}
    while len(vals) < min(count, nv + 1):
        vals.add(int(torch.randint(0, nv + 1, (1,), generator=gen)))
    return sorted(vals)


# --------------------------------------------------------------------------------------------
# Kernel vs reference
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nv", [1, 2, 3, 7, 31, 64, 100, 257, 500])
def test_matches_reference_without_grid(nv, device):
    gen = torch.Generator().manual_seed(nv)
    for i, keep in enumerate(keep_values(nv, gen, 5)):
        b = 1 + (nv + i) % 3
        mass = MASSES[(nv + i) % len(MASSES)]
        scores = exact_scores(b, nv, gen, skew=(1.0, 4.0, 12.0)[i % 3], device=device)
        check_against_reference(scores, keep, mass, None)


GRIDS = [
    (1, 1, 1),
    (1, 1, 9),
    (1, 6, 1),
    (5, 1, 1),
    (3, 5, 7),
    (2, 14, 14),
    (4, 3, 3),
    (7, 2, 3),
    (1, 16, 28),
    (6, 4, 5),
]


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: "x".join(map(str, g)))
def test_matches_reference_with_grid(grid, device):
    nv = math.prod(grid)
    gen = torch.Generator().manual_seed(nv + 7)
    for i, keep in enumerate(keep_values(nv, gen, 5)):
        b = 1 + i % 3
        mass = MASSES[(sum(grid) + i) % len(MASSES)]
        scores = exact_scores(b, nv, gen, skew=(4.0, 1.0, 12.0)[i % 3], device=device)
        check_against_reference(scores, keep, mass, grid)


@pytest.mark.parametrize(
    "nv,grid,block",
    [
        (150, None, 32),
        (203, None, 64),
        (150, (3, 5, 10), 32),  # frame tiles of 1 frame x 32 priority ranks, 2 chunks per frame
        (168, (7, 4, 6), 16),  # 24-token frames over two 16-wide priority chunks
        (96, (96, 1, 1), 32),  # frames of one token: the frame loops run in 3 chunks
    ],
)
def test_cross_chunk_carries(nv, grid, block):
    """Chunks much smaller than the row: carries of tie ranks, free ranks, output slots,
    Stage-I frame counts, frame quotas and per-frame priority counts cross chunk borders."""
    gen = torch.Generator().manual_seed(nv)
    for keep, mass, skew in [(nv // 10, 0.4, 6.0), (nv // 2, 0.9, 1.0)]:
        scores = exact_scores(2, nv, gen, skew=skew)
        check_against_reference(scores, keep, mass, grid, block=block)
    # exact ties spread over many chunks: ties at the threshold are taken in index order
    scores = (torch.randint(0, 4, (2, nv), generator=gen) * 0.25).float()
    check_against_reference(scores, nv // 3, 0.5, grid, block=block, radix_bits=8)


@pytest.mark.parametrize("radix_bits", [3, 5, 8])
@pytest.mark.parametrize("grid", [None, (4, 5, 7)])
def test_radix_digit_widths(radix_bits, grid):
    """Other digit widths: a first digit of one bit (3), first digits past bit 30 (5, 8), wide
    histograms (256 bins); ties, zeros and huge keys; chunks of 32 over 140 tokens."""
    gen = torch.Generator().manual_seed(radix_bits)
    scores = exact_scores(2, 140, gen, skew=6.0)
    scores[0, ::7] = 0.0
    scores[1, :40] = 2.0**100
    for keep, mass in [(14, 0.4), (70, 0.9), (140, 1.0)]:
        check_against_reference(scores, keep, mass, grid, block=32, radix_bits=radix_bits)


def test_chunks_of_several_blocks():
    """A chunk spans several blocks (and a frame chunk several frames): carries cross blocks
    inside one program as well as chunk borders between programs."""
    gen = torch.Generator().manual_seed(30)
    for grid, nv in [(None, 333), ((9, 5, 7), 315)]:
        scores = exact_scores(2, nv, gen, skew=5.0)
        check_against_reference(scores, nv // 9, 0.4, grid, block=16, chunk=80)


def test_select_config():
    cfg = ts._select_config(65536, None, torch.device("meta"))
    assert (cfg["BLOCK"], cfg["chunk_len"], cfg["n_chunks"], cfg["radix_bits"]) == (
        512,
        512,
        128,
        4,
    )
    assert cfg["num_warps"] == 8 and cfg["RB"] == 128
    cfg = ts._select_config(334 * 196, (334, 14, 14), torch.device("meta"))
    assert cfg["frames_per_chunk"] == 2 and cfg["chunk_len"] == 392 and cfg["n_chunks"] == 167
    cfg = ts._select_config(1000, (1, 10, 100), torch.device("cpu"))  # one frame: one chunk
    assert cfg["frames_per_chunk"] == 1 and cfg["n_chunks"] == 1
    assert ts.radix_passes(4) == [(28 - 4 * p, 32 - 4 * p) for p in range(8)]
    assert ts.radix_passes(5) == [(30, 32)] + [(30 - 5 * p, 35 - 5 * p) for p in range(1, 7)]
    with pytest.raises(ValueError, match="radix_bits"):
        ts._select_config(100, None, torch.device("cpu"), radix_bits=9)


@pytest.mark.parametrize("seed", range(6))
def test_random_layouts(seed):
    """Random frame layouts (or none), budgets, masses, skews and chunk sizes."""
    gen = torch.Generator().manual_seed(100 + seed)

    def draw(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    for _ in range(4):
        grid = (draw(1, 6), draw(1, 9), draw(1, 9)) if draw(0, 3) else None
        nv = math.prod(grid) if grid else draw(1, 300)
        keep = draw(0, nv)
        mass = MASSES[draw(0, 4)]
        skew = (1.0, 3.0, 10.0, 30.0)[draw(0, 3)]
        block = (None, 32, 64, 128)[draw(0, 3)]
        launch = {} if block is None else {"block": block, "radix_bits": (4, 5, 8)[draw(0, 2)]}
        if block is not None and draw(0, 1):
            launch["chunk"] = 2 * block  # two blocks per chunk
        scores = exact_scores(draw(1, 3), nv, gen, skew=skew)
        check_against_reference(scores, keep, mass, grid, **launch)


def test_fp16_scores(device):
    gen = torch.Generator().manual_seed(5)
    scores = exact_scores(3, 120, gen, skew=5.0, device=device, dtype=torch.float16)
    check_against_reference(scores, 30, 0.4, None)
    check_against_reference(scores, 30, 0.4, (2, 6, 10))


@pytest.mark.gpu
def test_bf16_scores(device):
    if device.type != "cuda":
        pytest.skip("bf16 runs on the GPU only")
    gen = torch.Generator().manual_seed(6)
    scores = exact_scores(2, 392, gen, skew=5.0, device=device, dtype=torch.bfloat16)
    check_against_reference(scores, 40, 0.4, (2, 14, 14))


def test_softmax_scores_unrounded(device):
    """Ordinary fp32 softmax rows (not on the exact grid): fp64 sums may round, but a partial
    sum landing within rounding of the target is vanishingly unlikely (see module doc)."""
    gen = torch.Generator().manual_seed(7)
    for nv, grid in [(300, (3, 10, 10)), (250, None)]:
        scores = torch.softmax(torch.randn(2, nv, generator=gen) * 3, dim=-1).to(device)
        check_against_reference(scores, nv // 10, 0.4, grid, properties=False)


def test_non_contiguous_scores(device):
    gen = torch.Generator().manual_seed(8)
    base = exact_scores(140, 3, gen, skew=4.0, device=device)
    scores = base.t()  # [3, 140], strides (1, 3)
    assert not scores.is_contiguous()
    check_against_reference(scores, 20, 0.4, (4, 5, 7))
    check_against_reference(scores[:, ::2], 15, 0.4, None)


@pytest.mark.gpu
def test_large_rows_gpu(device):
    """Real sizes (GPU only): Nv up to 128k, many chunks per pass."""
    if device.type != "cuda":
        pytest.skip("GPU only")
    gen = torch.Generator().manual_seed(9)
    for nv, grid in [
        (65536, None),
        (131072, None),
        (65856, (336, 14, 14)),
        (64512, (144, 16, 28)),
        (129024, (288, 16, 28)),
    ]:
        scores = exact_scores(2, nv, gen, skew=8.0, device=device)
        got = select_video_tokens(scores, nv // 10, mass=0.4, grid=grid)
        want = ref.select_video_tokens_ref(scores, nv // 10, mass=0.4, grid=grid)
        assert torch.equal(got, want)


# --------------------------------------------------------------------------------------------
# Edge cases and properties
# --------------------------------------------------------------------------------------------
def test_keep_zero_and_keep_all(device):
    gen = torch.Generator().manual_seed(10)
    scores = exact_scores(2, 60, gen, device=device)
    for grid in (None, (3, 4, 5)):
        assert select_video_tokens(scores, 0, grid=grid).shape == (2, 0)
        got = check_against_reference(scores, 60, 0.4, grid)
        assert torch.equal(got.cpu(), torch.arange(60).expand(2, 60))


def test_all_equal_scores(device):
    scores = torch.full((2, 40), 0.125, device=device)
    cases = [(10, 0.4, None), (20, 0.4, None), (10, 1.0, (2, 4, 5)), (30, 0.5, None)]
    for keep, mass, grid in cases:
        got = check_against_reference(scores, keep, mass, grid)
        # Stage I: ties are taken in index order, so it is the prefix 0 .. m-1
        m = min(keep, math.ceil(mass * 40))
        assert got[0, :m].tolist() == list(range(m))


def test_exact_ties_mass_one_and_zeros(device):
    # values from {0, 1/8, 1/4, 1/2}: many exact ties at every threshold; mass = 1 keeps every
    # positive score when the budget allows (sums are exact)
    gen = torch.Generator().manual_seed(11)
    scores = (2.0 ** -torch.randint(1, 4, (3, 90), generator=gen).float()).to(device)
    scores[:, ::4] = 0.0
    for keep, mass, grid in [
        (70, 1.0, None),
        (90, 1.0, (3, 5, 6)),
        (30, 0.4, (3, 5, 6)),
        (45, 0.6, None),
    ]:
        got = check_against_reference(scores, keep, mass, grid)
        if keep == 90:
            assert torch.equal(got.cpu(), torch.arange(90).expand(3, 90))


def test_zero_scores_and_negative_zero(device):
    """All-zero rows have target 0, so Stage I is empty and Stage II is a pure spread; -0.0
    counts as 0.0 (its bit pattern must not be read as a huge key)."""
    scores = torch.zeros(2, 50, device=device)
    scores[1, ::3] = -0.0
    for grid in (None, (2, 5, 5)):
        check_against_reference(scores, 7, 0.4, grid)
    scores[0, 10] = 0.5
    scores[1, 20] = 0.25
    check_against_reference(scores, 5, 0.9, (2, 5, 5))


def test_huge_scores_do_not_overflow_the_key_bisection(device):
    """Keys near the top of the fp32 range (lo + hi would overflow int32)."""
    gen = torch.Generator().manual_seed(12)
    scores = (torch.randint(0, 64, (2, 80), generator=gen).float() * 2.0**110).to(device)
    check_against_reference(scores, 12, 0.4, None)
    check_against_reference(scores, 12, 0.9, (4, 4, 5))


def test_lattice_in_an_empty_frame(device):
    """mass = 0: Stage II alone; in an 8 x 8 frame the first 4 picks are the stride-4
    lattice, the first 16 the stride-2 lattice; two frames split 8 picks 4 + 4."""
    scores = torch.rand(1, 128).to(device)
    got = select_video_tokens(scores, 8, mass=0.0, grid=(2, 8, 8))
    corners = [r * 8 + c for r in (0, 4) for c in (0, 4)]
    assert got[0].tolist() == corners + [64 + i for i in corners]
    got = select_video_tokens(scores[:, :64], 16, mass=0.0, grid=(1, 8, 8))
    assert got[0].tolist() == [r * 8 + c for r in range(0, 8, 2) for c in range(0, 8, 2)]


def test_even_quotas_without_saturation(device):
    """Stage I small and spread: every frame keeps room, so quotas differ by at most one."""
    gen = torch.Generator().manual_seed(13)
    grid = (7, 4, 5)
    scores = exact_scores(2, 140, gen, device=device)
    got = check_against_reference(scores, 45, 0.05, grid)
    for b in range(2):
        s1 = set(stage1_brute(scores[b].cpu(), 45, 0.05))
        per_frame = [
            sum(1 for i in got[b].tolist() if i // 20 == f and i not in s1) for f in range(7)
        ]
        assert max(per_frame) - min(per_frame) <= 1


def test_saturated_frame(device):
    """Stage I takes a whole frame: it has no room for Stage II, the others share the rest
    evenly, and the result is still keep unique tokens."""
    grid = (4, 3, 3)
    scores = torch.full((1, 36), 2.0**-10)
    scores[0, 9:18] = 1.0  # frame 1 holds almost all the mass
    scores = scores.to(device)
    keep = 9 + 10
    got = check_against_reference(scores, keep, 0.9, grid)
    row = got[0].tolist()
    assert set(range(9, 18)) <= set(row) and len(set(row)) == keep
    per_frame = [sum(1 for i in row if i // 9 == f) for f in range(4)]
    assert per_frame[1] == 9 and sorted(per_frame[0:1] + per_frame[2:]) == [3, 3, 4]


@pytest.mark.parametrize("block", [None, 16])
def test_nearly_full_frames(block):
    """Stage I fills frames unevenly (0 to 6 of their 6 tokens), so exact per-frame free
    counts decide the quotas; with block 16 the frame ends fall across chunk borders."""
    gen = torch.Generator().manual_seed(18)
    grid = (10, 2, 3)
    for _ in range(3):
        heavy = torch.randint(0, 7, (10,), generator=gen).tolist()
        scores = torch.full((1, 60), 2.0**-12)
        for f, h in enumerate(heavy):
            scores[0, f * 6 + torch.randperm(6, generator=gen)[:h]] = 1.0
        m = sum(heavy)  # mass 0.99 takes every heavy token and no light one
        assert len(stage1_brute(scores[0], 60, 0.99)) == m
        for rest in (max(1, (60 - m) // 2), max(1, 60 - m - 3)):
            check_against_reference(scores, min(60, m + rest), 0.99, grid, block=block)


def test_stage1_capped_at_keep(device):
    """Flat scores: Stage I would need more than keep tokens, so it is the top-keep set."""
    gen = torch.Generator().manual_seed(14)
    scores = exact_scores(2, 100, gen, device=device)
    got = check_against_reference(scores, 10, 0.9, (4, 5, 5))
    for b in range(2):
        top = sorted(range(100), key=lambda i: (-float(scores[b, i]), i))[:10]
        assert got[b].tolist() == sorted(top)


def test_empty_batch_is_supported(device):
    scores = torch.rand(0, 30).to(device)
    assert select_video_tokens(scores, 5, grid=(2, 3, 5)).shape == (0, 5)
    kept, idx = prune_video_tokens(torch.rand(0, 30, 4).to(device), scores, 5)
    assert kept.shape == (0, 5, 4) and idx.shape == (0, 5)


def test_deterministic(device):
    gen = torch.Generator().manual_seed(15)
    scores = torch.softmax(torch.randn(2, 200, generator=gen), dim=-1).to(device)
    feats = torch.randn(2, 200, 8, generator=gen).to(device)
    for grid in (None, (2, 10, 10)):
        a = prune_video_tokens(feats, scores, 20, grid=grid)
        b = prune_video_tokens(feats, scores, 20, grid=grid)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --------------------------------------------------------------------------------------------
# Gather (prune_video_tokens)
# --------------------------------------------------------------------------------------------
DTYPES = [torch.float32, torch.float16, pytest.param(torch.bfloat16, marks=pytest.mark.gpu)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_writes_every_element(dtype, device):
    """The gather kernel alone, into a NaN-filled buffer: every kept row is an exact copy."""
    if dtype == torch.bfloat16 and device.type == "cpu":
        pytest.skip("bf16 runs on the GPU only")
    gen = torch.Generator().manual_seed(16)
    for b, nv, c, keep in [(2, 50, 37, 13), (1, 40, 300, 17), (3, 9, 1, 9)]:
        feats = torch.randn(b, nv, c, generator=gen).to(device=device, dtype=dtype)
        idx = torch.stack(
            [torch.randperm(nv, generator=gen)[:keep].sort().values for _ in range(b)]
        ).to(device)
        out = nan_filled((b, keep, c), dtype, device)
        ts._launch_gather(feats, idx, out)
        assert torch.equal(out, feats.gather(1, idx[:, :, None].expand(-1, -1, c)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_prune_matches_reference(dtype, device):
    if dtype == torch.bfloat16 and device.type == "cpu":
        pytest.skip("bf16 runs on the GPU only")
    gen = torch.Generator().manual_seed(17)
    scores = exact_scores(2, 120, gen, skew=4.0, device=device)
    feats = torch.randn(2, 120, 72, generator=gen).to(device=device, dtype=dtype)
    for grid in (None, (2, 6, 10)):
        kept, idx = prune_video_tokens(feats, scores, 25, mass=0.4, grid=grid)
        kept_ref, idx_ref = ref.prune_video_tokens_ref(feats, scores, 25, mass=0.4, grid=grid)
        assert kept.dtype == dtype and kept.shape == (2, 25, 72)
        assert torch.equal(idx, idx_ref) and torch.equal(kept, kept_ref)
    # non-contiguous features (a channel slice of a wider buffer)
    wide = torch.randn(2, 120, 100, generator=gen).to(device=device, dtype=dtype)
    kept, idx = prune_video_tokens(wide[:, :, 10:60], scores, 25, grid=(2, 6, 10))
    assert torch.equal(kept, wide[:, :, 10:60].gather(1, idx[:, :, None].expand(-1, -1, 50)))


# --------------------------------------------------------------------------------------------
# The Triton path really ran; the reference fallback
# --------------------------------------------------------------------------------------------
def test_cpu_runs_triton_under_the_interpreter(monkeypatch):
    if not os.environ.get("TRITON_INTERPRET"):
        pytest.skip("the interpreter is off (a CUDA machine)")
    assert backend_for(torch.device("cpu")) == TRITON

    def boom(*args, **kwargs):
        raise AssertionError("fell back to the reference")

    monkeypatch.setattr(ts, "select_video_tokens_ref", boom)
    monkeypatch.setattr(ts, "prune_video_tokens_ref", boom)
    scores = torch.rand(2, 30)
    idx = select_video_tokens(scores, 6, grid=(2, 3, 5))
    kept, idx2 = prune_video_tokens(torch.randn(2, 30, 4), scores, 6)
    assert idx.shape == (2, 6) and kept.shape == (2, 6, 4)


def test_reference_backend_is_used_when_forced(monkeypatch):
    monkeypatch.setenv("SPECVLM_KERNELS_BACKEND", "reference")

    def boom(*args, **kwargs):
        raise AssertionError("the Triton launcher ran")

    monkeypatch.setattr(ts, "_launch_select", boom)
    monkeypatch.setattr(ts, "_launch_gather", boom)
    scores = torch.rand(2, 30)
    feats = torch.randn(2, 30, 4)
    want = ref.select_video_tokens_ref(scores, 6, mass=0.4, grid=(2, 3, 5))
    assert torch.equal(select_video_tokens(scores, 6, grid=[2, 3, 5]), want)
    kept, idx = prune_video_tokens(feats, scores, 6, grid=(2, 3, 5))
    assert torch.equal(idx, want)
    assert torch.equal(kept, feats.gather(1, want[..., None].expand(-1, -1, 4)))
    with pytest.raises(ValueError, match="keep"):
        select_video_tokens(scores, 31)


def test_priority_order_cache():
    perm = ts._priority_order(14, 14, torch.device("cpu"))
    assert perm.dtype == torch.int32
    assert torch.equal(perm.long(), torch.argsort(ref.spatial_priority(14, 14)))
    assert ts._priority_order(14, 14, torch.device("cpu")) is perm


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
S = torch.rand(2, 12)
F = torch.randn(2, 12, 3)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(scores=[[0.1, 0.2]]), TypeError, "scores must be a torch.Tensor"),
        (dict(scores=torch.rand(12)), ValueError, "scores must have 2 dimensions"),
        (dict(scores=torch.rand(1, 2, 12)), ValueError, "scores must have 2 dimensions"),
        (dict(scores=torch.rand(2, 12).double()), TypeError, "scores must have dtype"),
        (dict(scores=torch.ones(2, 12, dtype=torch.int32)), TypeError, "scores must have dtype"),
        (dict(keep=3.0), TypeError, "keep must be an int"),
        (dict(keep=True), TypeError, "keep must be an int"),
        (dict(keep=-1), ValueError, r"keep must be in \[0, 12\]"),
        (dict(keep=13), ValueError, r"keep must be in \[0, 12\]"),
        (dict(mass="0.4"), TypeError, "mass must be a float"),
        (dict(mass=False), TypeError, "mass must be a float"),
        (dict(mass=-0.1), ValueError, "mass must be in"),
        (dict(mass=1.5), ValueError, "mass must be in"),
        (dict(mass=float("nan")), ValueError, "mass must be in"),
        (dict(grid=12), TypeError, "grid must be None or a tuple"),
        (dict(grid=(2, 6)), ValueError, "grid must have 3 entries"),
        (dict(grid=(2, 2, 3, 1)), ValueError, "grid must have 3 entries"),
        (dict(grid=(2.0, 2, 3)), TypeError, r"grid\[0\] must be an int"),
        (dict(grid=(4, 0, 3)), ValueError, r"grid\[1\] must be in"),
        (dict(grid=(-2, -2, 3)), ValueError, r"grid\[0\] must be in"),
        (dict(grid=(2, 2, 2)), ValueError, "grid .* must multiply to the number of video tokens"),
    ],
)
def test_argument_errors(kwargs, exc, match):
    args = dict(scores=S, keep=4, mass=0.4, grid=None) | kwargs
    scores, keep = args.pop("scores"), args.pop("keep")
    with pytest.raises(exc, match=match):
        select_video_tokens(scores, keep, **args)
    with pytest.raises(exc, match=match):
        prune_video_tokens(F, scores, keep, **args)


@pytest.mark.parametrize("bad", [-1e-6, float("nan"), float("inf")])
def test_scores_must_be_finite_and_non_negative(bad):
    scores = S.clone()
    scores[1, 5] = bad
    with pytest.raises(ValueError, match="scores must be finite and non-negative"):
        select_video_tokens(scores, 4)
    with pytest.raises(ValueError, match="scores must be finite and non-negative"):
        prune_video_tokens(F, scores, 4)


def test_too_many_tokens():
    huge = torch.zeros(1, 1).expand(1, ts.MAX_TOKENS + 1)  # no memory behind it
    with pytest.raises(ValueError, match="at most"):
        select_video_tokens(huge, 1)


@pytest.mark.parametrize(
    "features,exc,match",
    [
        ("not a tensor", TypeError, "features must be a torch.Tensor"),
        (torch.randn(2, 12), ValueError, "features must have 3 dimensions"),
        (torch.ones(2, 12, 3, dtype=torch.int64), TypeError, "features must have dtype"),
        (torch.randn(2, 11, 3), ValueError, r"features must have shape \[B, Nv, C\]"),
        (torch.randn(3, 12, 3), ValueError, r"features must have shape \[B, Nv, C\]"),
        (torch.empty(2, 12, 3, device="meta"), ValueError, "features is on meta"),
    ],
)
def test_feature_errors(features, exc, match):
    with pytest.raises(exc, match=match):
        prune_video_tokens(features, S, 4)


# --------------------------------------------------------------------------------------------
# No host synchronisation; invalid values; the launch device
# --------------------------------------------------------------------------------------------
def test_invalid_scores_are_read_as_zero_by_the_kernels():
    """Unchecked (CUDA without SPECVLM_KERNELS_DEBUG), negative, infinite and NaN scores are
    read as 0: a defined selection, identical to the reference on the cleaned scores."""
    gen = torch.Generator().manual_seed(31)
    scores = exact_scores(2, 90, gen, skew=4.0)
    scores[0, 3] = float("nan")
    scores[0, 10] = float("inf")
    scores[1, 5] = -0.5
    scores[1, 6] = float("-inf")
    clean = torch.where(torch.isfinite(scores) & (scores >= 0), scores, torch.zeros(()))
    for grid in (None, (3, 5, 6)):
        got = ts._launch_select(scores, 20, 0.4, grid)
        assert torch.equal(got, ref.select_video_tokens_ref(clean, 20, mass=0.4, grid=grid))


def test_no_value_check_without_debug_on_cuda(monkeypatch):
    """The public functions read no value on the host unless the policy asks for it (CPU, or
    CUDA with SPECVLM_KERNELS_DEBUG=1): with the CUDA policy, no aminmax and no sync."""

    def boom(*args, **kwargs):
        raise AssertionError("a host-side value check ran")

    monkeypatch.setattr(ts, "value_checks", lambda device: False)  # what CUDA gets by default
    monkeypatch.setattr(torch, "aminmax", boom)
    scores = torch.rand(2, 30)
    scores[0, 4] = float("nan")
    idx = select_video_tokens(scores, 6, grid=(2, 3, 5))
    kept, idx2 = prune_video_tokens(torch.randn(2, 30, 4), scores, 6)
    assert idx.shape == idx2.shape == (2, 6) and kept.shape == (2, 6, 4)


def test_every_launch_runs_inside_the_inputs_device_guard(monkeypatch):
    """Triton launches on the current CUDA device: every selection and gather launch must run
    inside ``device_guard(scores.device)`` (the logic, checked on the CPU with a recorder)."""
    state = {"inside": [], "launches": 0}

    class Guard:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            state["inside"].append(self.device)

        def __exit__(self, *exc):
            state["inside"].pop()
            return False

    class Launch:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def run(*args, **kwargs):
                assert state["inside"] == [torch.device("cpu")], "launched outside the guard"
                state["launches"] += 1
                return self.kernel[grid](*args, **kwargs)

            return run

    monkeypatch.setattr(ts, "device_guard", Guard)
    for name in (
        "_radix_hist_kernel",
        "_emit_flat_kernel",
        "_grid_flags_kernel",
        "_grid_walk_kernel",
        "_gather_rows_kernel",
    ):
        monkeypatch.setattr(ts, name, Launch(getattr(ts, name)))
    monkeypatch.setattr(ts, "check_compiled", lambda kernel, device: None)
    scores = torch.rand(1, 60)
    ts._launch_select(scores, 6, 0.4, None)
    ts._launch_select(scores, 6, 0.4, (3, 4, 5))
    prune_video_tokens(torch.randn(1, 60, 8), scores, 6)
    passes = len(ts.radix_passes(4))
    assert state["launches"] == (passes + 1) + (passes + 2) + (passes + 2)
    assert state["inside"] == []


@pytest.mark.gpu
def test_cuda_graph_capture_and_replay_select_and_prune():
    """No host sync: selection and gather are captured once and replayed with new scores."""
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(32)
    nv, grid = 334 * 196, (334, 14, 14)
    scores = exact_scores(1, nv, gen, skew=8.0, device=device)
    feats = torch.randn(1, nv, 896, generator=gen).to(device=device, dtype=torch.bfloat16)
    keep = nv // 10
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile, cache the priority order
        for _ in range(2):
            prune_video_tokens(feats, scores, keep, grid=grid)
            select_video_tokens(scores, keep)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        kept, idx = prune_video_tokens(feats, scores, keep, grid=grid)
        flat = select_video_tokens(scores, keep)
    for trial in range(3):
        scores.copy_(exact_scores(1, nv, gen, skew=4.0 + 4 * trial, device=device))
        graph.replay()
        torch.cuda.synchronize()
        want = ref.select_video_tokens_ref(scores, keep, mass=0.4, grid=grid)
        assert torch.equal(idx, want), f"replay {trial}"
        assert torch.equal(kept, feats.gather(1, want[:, :, None].expand(-1, -1, 896)))
        assert torch.equal(flat, ref.select_video_tokens_ref(scores, keep, mass=0.4))


@pytest.mark.gpu
def test_inputs_on_a_device_that_is_not_current_gpu():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    device = torch.device("cuda", 1)
    gen = torch.Generator().manual_seed(33)
    with torch.cuda.device(0):
        scores = exact_scores(2, 4 * 196, gen, skew=6.0, device=device)
        feats = torch.randn(2, 4 * 196, 64, generator=gen).to(device)
        for grid in (None, (4, 14, 14)):
            kept, idx = prune_video_tokens(feats, scores, 80, grid=grid)
            want = ref.select_video_tokens_ref(scores, 80, mass=0.4, grid=grid)
            assert torch.equal(idx, want)
            assert torch.equal(kept, feats.gather(1, want[:, :, None].expand(-1, -1, 64)))


@pytest.mark.gpu
def test_debug_mode_checks_values_on_cuda(monkeypatch):
    scores = torch.rand(1, 50, device="cuda")
    scores[0, 7] = -1.0
    select_video_tokens(scores, 5)  # unchecked by default: read as 0, no error, no sync
    monkeypatch.setenv("SPECVLM_KERNELS_DEBUG", "1")
    with pytest.raises(ValueError, match="scores must be finite and non-negative"):
        select_video_tokens(scores, 5)
