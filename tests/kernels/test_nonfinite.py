"""Kernels and references agree on NaN and infinite inputs.

Attention propagates non-finite inputs: a NaN (or a ``+inf`` score) reaching a row makes that
row NaN, a ``-inf`` score weighs 0, and ``P @ V`` multiplies every value row, so ``0 * nan``
reaches rows that do not see the key. The references define this (``tree_attention_ref``: a
row whose scores are all ``-inf``, e.g. one that sees no key, keeps its zero output;
``video_attention_scores_ref``: a row pays exactly 0 to the keys it does not see), and the
kernels, run here under the Triton interpreter into outputs and scratch pre-filled with NaN,
must give NaN and infinities at exactly the same places and the same finite values elsewhere,
at awkward shapes (length 1, odd lengths and head dims, GQA ratios 1/3/7, no prefix) and with
forced split counts. The selection reads negative, infinite and NaN scores as 0, in the
kernels and in the reference alike.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from specvlm_kernels import reference as ref
from specvlm_kernels._dispatch import TRITON, backend_for
from tests.kernels._helpers import assert_agrees_on_nonfinite, nan_filled

ta = importlib.import_module("specvlm_kernels.tree_attention")
vas = importlib.import_module("specvlm_kernels.attention_scores")
ts = importlib.import_module("specvlm_kernels.token_select")

ATOL = {torch.float32: 2e-6, torch.float16: 2e-3}
NAN, INF = float("nan"), float("inf")


def _need_triton(t: torch.Tensor) -> None:
    if backend_for(t.device) != TRITON:
        pytest.skip("Triton backend not active (set TRITON_INTERPRET=1 on a CPU-only machine)")


def _randn(gen, *shape):
    return torch.randn(*shape, generator=gen)


def _pick(gen, high: int, low: int = 0) -> int:
    return int(torch.randint(low, high, (1,), generator=gen))


# --------------------------------------------------------------------------------------------
# Tree attention
# --------------------------------------------------------------------------------------------
TREE_SHAPES = [
    # (B, Hq, Hk, N, L, D)
    (1, 1, 1, 1, 1, 16),  # length 1: one node, one key
    (1, 3, 1, 1, 37, 16),  # decode, GQA 3, odd length
    (2, 6, 2, 5, 37, 20),  # GQA 3, odd length and head dim
    (1, 7, 1, 3, 19, 24),  # GQA 7
    (2, 4, 4, 6, 6, 16),  # no prefix (L == N): a row with an all-False mask sees nothing
]
# (tensor, value, where): "tree" keys are seen by some rows only, "prefix" keys by all
POISONS = {
    "q_nan": ("q", NAN, "any"),
    "q_inf": ("q", INF, "any"),
    "k_nan_prefix": ("k", NAN, "prefix"),
    "k_nan_tree": ("k", NAN, "tree"),
    "k_posinf_tree": ("k", INF, "tree"),
    "k_neginf": ("k", -INF, "any"),
    "v_nan_tree": ("v", NAN, "tree"),
    "v_posinf": ("v", INF, "any"),
    "v_neginf_prefix": ("v", -INF, "prefix"),
}


def _tree_inputs(shape, poison: str, dtype, seed: int):
    """q, k, v with one poisoned element, and a random mask whose first row is all False."""
    b, hq, hk, n, length, d = shape
    gen = torch.Generator().manual_seed(seed)
    q, k, v = _randn(gen, b, hq, n, d), _randn(gen, b, hk, length, d), _randn(gen, b, hk, length, d)
    mask = torch.rand(b, n, n, generator=gen) < 0.5
    mask[:, 0, :] = False
    name, value, where = POISONS[poison]
    tensor = {"q": q, "k": k, "v": v}[name]
    prefix = length - n
    if where == "prefix" and prefix > 0:
        pos = _pick(gen, prefix)
    elif where in ("prefix", "tree"):
        pos = _pick(gen, length, prefix)
    else:
        pos = _pick(gen, tensor.shape[2])
    tensor[_pick(gen, tensor.shape[0]), _pick(gen, tensor.shape[1]), pos, _pick(gen, d)] = value
    return q.to(dtype), k.to(dtype), v.to(dtype), mask


def _tree_check(q, k, v, mask, *, num_splits=None, lengths=None):
    """The launcher into a NaN-filled output (and NaN-filled scratch for forced splits) against
    the fp64 reference; returns the output."""
    _need_triton(q)
    scale = q.shape[-1] ** -0.5
    out = nan_filled(q.shape, q.dtype, q.device)
    launch = {}
    if num_splits is not None:
        b, hq, n, d = q.shape
        launch = dict(
            num_splits=num_splits,
            partial_out=nan_filled((b, hq, n, num_splits, d), torch.float32, q.device),
            partial_lse=nan_filled((b, hq, n, num_splits), torch.float32, q.device),
        )
    ta._tree_attention_triton(q, k, v, mask, scale, out=out, lengths=lengths, **launch)
    exact = ref.tree_attention_ref(
        q.double(), k.double(), v.double(), mask, scale=scale, lengths=lengths
    )
    assert_agrees_on_nonfinite(out, exact, atol=ATOL[q.dtype], rtol=ATOL[q.dtype])
    return out


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("shape", TREE_SHAPES, ids=lambda s: "B{}-Hq{}-Hk{}-N{}-L{}-D{}".format(*s))
def test_tree_attention_nonfinite_inputs(shape, poison):
    index = TREE_SHAPES.index(shape) * len(POISONS) + list(POISONS).index(poison)
    q, k, v, mask = _tree_inputs(shape, poison, torch.float32, seed=index)
    _tree_check(q, k, v, mask)
    length = shape[4]
    if length >= 16:  # split-K: partials and the merge carry NaN and infinities too
        _tree_check(q, k, v, mask, num_splits=3)


@pytest.mark.parametrize("poison", ["q_nan", "k_nan_tree", "k_posinf_tree", "v_nan_tree"])
def test_tree_attention_nonfinite_fp16(poison):
    q, k, v, mask = _tree_inputs((2, 6, 2, 5, 37, 20), poison, torch.float16, seed=99)
    _tree_check(q, k, v, mask)
    _tree_check(q, k, v, mask[:1], num_splits=2)


def test_tree_attention_rows_that_see_no_key_keep_zero():
    """No prefix, node 0 sees nothing: its output stays 0 even with NaN in its query and +inf in
    the keys it does not see; the other rows go NaN where they see the +inf key."""
    gen = torch.Generator().manual_seed(7)
    b, hq, hk, n, d = 1, 3, 1, 4, 16
    q, k, v = _randn(gen, b, hq, n, d), _randn(gen, b, hk, n, d), _randn(gen, b, hk, n, d)
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    mask[0, 0] = False
    q[0, 1, 0, :] = NAN
    k[0, 0, 2, 3] = INF  # node 2's key: seen by nodes 2 and 3
    q[..., 3] = q[..., 3].abs() + 0.5  # so the score of that key is +inf, not NaN
    out = _tree_check(q, k, v, mask)
    assert (out[:, :, 0] == 0).all()
    assert torch.isnan(out[:, :, 2:]).all() and not torch.isnan(out[:, :, 1]).any()


def test_tree_attention_nonfinite_with_device_lengths():
    """Static buffers: NaN past each row's length is never read; a NaN inside the length is."""
    gen = torch.Generator().manual_seed(3)
    b, hq, hk, n, buf, d = 2, 6, 2, 3, 41, 16
    q, k, v = _randn(gen, b, hq, n, d), _randn(gen, b, hk, buf, d), _randn(gen, b, hk, buf, d)
    lengths = torch.tensor([17, 29])
    for row, length in enumerate(lengths.tolist()):
        k[row, :, length:] = NAN
        v[row, :, length:] = INF
    v[1, 1, 5, 2] = NAN  # inside row 1's prefix: column 2 of KV head 1 of row 1 goes NaN
    mask = torch.rand(n, n, generator=gen) < 0.6
    for splits in (None, 3):
        out = _tree_check(q, k, v, mask, num_splits=splits, lengths=lengths)
        nan = torch.isnan(out)
        assert nan[1, 3:, :, 2].all() and int(nan.sum()) == nan[1, 3:, :, 2].numel()


# --------------------------------------------------------------------------------------------
# Video attention scores
# --------------------------------------------------------------------------------------------
SCORE_SHAPES = [
    # (B, Hq, Hk, Lq, Lk, D, q_offset or None)
    (1, 1, 1, 1, 1, 16, None),  # length 1
    (1, 3, 1, 1, 29, 24, None),  # one row, GQA 3
    (2, 6, 2, 5, 37, 20, None),  # odd lengths and head dim, GQA 3
    (1, 7, 1, 3, 33, 16, 11),  # GQA 7, rows mid-sequence: late keys seen by no row
    (1, 2, 2, 6, 36, 16, 20),  # MHA, rows mid-sequence
]
SCORE_POISONS = ["q_nan", "q_posinf", "k_nan", "k_posinf", "k_neginf", "k_nan_late"]


def _scores_inputs(shape, poison: str, seed: int):
    b, hq, hk, lq, lk, d, q_offset = shape
    gen = torch.Generator().manual_seed(seed)
    q, k = _randn(gen, b, hq, lq, d), _randn(gen, b, hk, lk, d)
    q_offset = lk - lq if q_offset is None else q_offset
    value = NAN if poison.endswith(("nan", "nan_late")) else (-INF if "neginf" in poison else INF)
    if poison.startswith("q"):
        q[_pick(gen, b), _pick(gen, hq), _pick(gen, lq), _pick(gen, d)] = value
    elif poison == "k_nan_late":  # a key only the last rows see (or none)
        k[_pick(gen, b), _pick(gen, hk), _pick(gen, lk, max(0, lk - 2)), _pick(gen, d)] = value
    else:
        k[_pick(gen, b), _pick(gen, hk), _pick(gen, min(lk, q_offset + 1)), _pick(gen, d)] = value
    return q, k, q_offset


@pytest.mark.parametrize("poison", SCORE_POISONS)
@pytest.mark.parametrize(
    "shape", SCORE_SHAPES, ids=lambda s: "B{}-Hq{}-Hk{}-Lq{}-Lk{}-D{}".format(*s)
)
def test_video_attention_scores_nonfinite_inputs(shape, poison):
    index = SCORE_SHAPES.index(shape) * len(SCORE_POISONS) + SCORE_POISONS.index(poison)
    q, k, q_offset = _scores_inputs(shape, poison, seed=100 + index)
    _need_triton(q)
    lk, lq, d = k.shape[2], q.shape[2], q.shape[3]
    span = (lk // 3, lk) if lk > 2 else (0, lk)
    exact = ref.video_attention_scores_ref(q.double(), k.double(), *span, q_offset=q_offset)
    for splits in (None, 3) if lk >= 16 else (None,):
        b, hq = q.shape[:2]
        launch = {}
        if splits is not None:
            launch = dict(
                num_splits=splits,
                lse=nan_filled((b, hq, lq), torch.float32, q.device),
                partials=nan_filled((b, hq, lq, splits, 2), torch.float32, q.device),
            )
        out = nan_filled((b, span[1] - span[0]), torch.float32, q.device)
        vas._video_attention_scores_triton(
            q, k, *span, d**-0.5, q_offset, out, accumulate=False, **launch
        )
        assert_agrees_on_nonfinite(out, exact, atol=1e-6, rtol=1e-5)


def test_video_scores_reference_pays_nothing_to_keys_a_row_does_not_see():
    """A NaN query row poisons only the video keys that row sees."""
    gen = torch.Generator().manual_seed(5)
    q, k = _randn(gen, 1, 2, 4, 16), _randn(gen, 1, 1, 12, 16)
    q[0, 0, 0, 0] = NAN  # row 0 sits at key 8 (q_offset 8): sees keys 0 .. 8
    got = ref.video_attention_scores_ref(q, k, 4, 12, q_offset=8)
    assert torch.isnan(got[0, :5]).all() and not torch.isnan(got[0, 5:]).any()


# --------------------------------------------------------------------------------------------
# Token selection: invalid scores read as 0 by the kernels and the reference
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [None, (3, 5, 6)])
def test_selection_reads_invalid_scores_as_zero_in_kernel_and_reference(grid):
    gen = torch.Generator().manual_seed(13)
    scores = torch.rand(2, 90, generator=gen) ** 4
    scores[0, 3], scores[0, 10], scores[0, 11] = NAN, INF, -0.0
    scores[1, 5], scores[1, 6], scores[1, 80] = -0.5, -INF, NAN
    _need_triton(scores)
    clean = torch.where(torch.isfinite(scores) & (scores >= 0), scores, torch.zeros(()))
    assert torch.equal(ref.readable_scores(scores), clean)
    want = ref.select_video_tokens_ref(scores, 20, mass=0.4, grid=grid)
    assert torch.equal(want, ref.select_video_tokens_ref(clean, 20, mass=0.4, grid=grid))
    assert torch.equal(ts._launch_select(scores, 20, 0.4, grid), want)
    assert torch.equal(ref.stage1_count_ref(scores, 20, 0.4), ref.stage1_count_ref(clean, 20, 0.4))
