"""specvlm_kernels.tree_attention: Triton kernel vs the plain-PyTorch reference.

On the CPU the kernels run under the Triton interpreter (conftest sets TRITON_INTERPRET=1), so
shapes are small; the split-K machinery is still exercised by a small key block (16/32) and
forced split counts. bf16, real-model shapes and the CUDA-graph capture run only on a GPU.

Tolerance (``assert_matches_reference``): the kernel's max error against an fp64 reference may
be at most twice that of a plain PyTorch implementation in the input dtype (scores, softmax and
the P @ V product all in that dtype), plus an atol of about one rounding of an O(1) output in
that dtype (ATOL below): the kernel accumulates in fp32 and rounds once at the end (on the GPU
it also rounds P to fp16/bf16 before the P @ V tensor-core product, as the baseline does).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specvlm_kernels import _dispatch as dispatch
from specvlm_kernels import reference as ref
from specvlm_kernels._dispatch import TRITON, backend_for
from specvlm_kernels.tree_attention import tree_attention
from tests.kernels._helpers import assert_matches_reference, nan_filled

# The package re-exports the function under the module's name, so fetch the module itself.
ta = importlib.import_module("specvlm_kernels.tree_attention")

# about one rounding of an O(1) output: half an ulp of 1.0 in fp16/bf16, a few ulp in fp32
ATOL = {torch.float32: 1e-6, torch.float16: 5e-4, torch.bfloat16: 4e-3}
DTYPES = [
    torch.float32,
    torch.float16,
    pytest.param(torch.bfloat16, marks=pytest.mark.gpu),
]


def _skip_bf16_on_cpu(dtype, device):
    if dtype == torch.bfloat16 and device.type == "cpu":
        pytest.skip("bf16 runs on the GPU only (interpreter bf16 arithmetic is unreliable)")


# --------------------------------------------------------------------------------------------
# Input builders
# --------------------------------------------------------------------------------------------
def random_parents(n: int, gen: torch.Generator) -> list[int]:
    """parent[i] in [-1, i - 1]: a forest in topological order (-1: a child of the prefix)."""
    return [int(torch.randint(-1, i, (1,), generator=gen)) if i else -1 for i in range(n)]


def tree_mask_from_parents(parents: list[int]) -> torch.Tensor:
    """mask[i, j] iff j is i or an ancestor of i."""
    n = len(parents)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while j >= 0:
            mask[i, j] = True
            j = parents[j]
    return mask


def make_mask(kind: str, b: int, n: int, gen: torch.Generator, device) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "2d":
        return tree_mask_from_parents(random_parents(n, gen)).to(device)
    if kind == "3d":
        return torch.stack([tree_mask_from_parents(random_parents(n, gen)) for _ in range(b)]).to(
            device
        )
    raise AssertionError(kind)


def make_qkv(b, hq, hk, n, length, d, dtype, device, gen, *, kv_layout="bhld"):
    q = torch.randn(b, hq, n, d, generator=gen).to(device=device, dtype=dtype)
    if kv_layout == "bhld":
        k = torch.randn(b, hk, length, d, generator=gen).to(device=device, dtype=dtype)
        v = torch.randn(b, hk, length, d, generator=gen).to(device=device, dtype=dtype)
    else:  # [B, L, H, D] storage seen as [B, H, L, D]: a non-contiguous view
        k = torch.randn(b, length, hk, d, generator=gen).to(device=device, dtype=dtype)
        v = torch.randn(b, length, hk, d, generator=gen).to(device=device, dtype=dtype)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
    return q, k, v


def torch_in_dtype(q, k, v, mask, scale):
    """Plain PyTorch attention entirely in the input dtype: the accuracy baseline."""
    n, length = q.shape[2], k.shape[2]
    group = q.shape[1] // k.shape[1]
    if mask is None:
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    prefix = torch.ones(mask.shape[0], n, length - n, dtype=torch.bool, device=q.device)
    visible = torch.cat([prefix, mask], dim=-1)[:, None]
    kk = k.repeat_interleave(group, dim=1)
    vv = v.repeat_interleave(group, dim=1)
    s = (q @ kk.transpose(-1, -2)) * scale
    p = torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1).nan_to_num(0.0)
    return p @ vv


def check_against_reference(q, k, v, mask, *, scale=None, out=None, **launch):
    """Run the Triton launcher into a NaN-filled output and compare with the fp64 oracle."""
    if backend_for(q.device) != TRITON:
        pytest.skip("Triton backend not active (the interpreter is off: a CUDA machine)")
    scale_f = q.shape[-1] ** -0.5 if scale is None else scale
    if out is None:
        out = nan_filled(q.shape, q.dtype, q.device)
    got = ta._tree_attention_triton(q, k, v, mask, scale_f, out=out, **launch)
    assert got is out
    exact = ref.tree_attention_ref(q.double(), k.double(), v.double(), mask, scale=scale_f)
    baseline = torch_in_dtype(q, k, v, mask, scale_f)
    assert_matches_reference(out, exact, baseline=baseline, atol=ATOL[q.dtype])
    return out


# --------------------------------------------------------------------------------------------
# Correctness
# --------------------------------------------------------------------------------------------
CASES = [
    # (B, Hq, Hk, N, L, D, mask kind)
    (1, 4, 4, 1, 37, 16, "none"),  # decode, MHA
    (2, 14, 2, 1, 300, 64, "none"),  # decode, GQA 7
    (1, 2, 1, 1, 1, 16, "2d"),  # one key in all
    (1, 8, 2, 26, 200, 64, "2d"),  # EAGLE-sized tree, GQA 4
    (2, 4, 2, 13, 101, 16, "3d"),  # per-batch trees, odd L
    (1, 7, 1, 40, 250, 16, "3d"),  # GQA 7 x 40 nodes: M = 280 rows, several row tiles
    (2, 2, 1, 9, 9, 32, "2d"),  # no prefix (L == N)
    (1, 2, 2, 5, 5, 16, "none"),  # chain, no prefix
    (1, 4, 1, 17, 129, 128, "none"),  # D = 128, chain
    (2, 6, 3, 2, 3, 24, "3d"),  # D not a power of two, tiny
    (1, 8, 4, 33, 65, 16, "2d"),  # tree spans the last key block boundary
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}-Hq{}-Hk{}-N{}-L{}-D{}-{}".format(*c))
def test_matches_reference(case, dtype, device):
    _skip_bf16_on_cpu(dtype, device)
    b, hq, hk, n, length, d, kind = case
    gen = torch.Generator().manual_seed(CASES.index(case))
    q, k, v = make_qkv(b, hq, hk, n, length, d, dtype, device, gen)
    mask = make_mask(kind, b, n, gen, device)
    check_against_reference(q, k, v, mask)


@pytest.mark.parametrize("dtype", DTYPES)
def test_public_function_matches_reference(dtype, device):
    _skip_bf16_on_cpu(dtype, device)
    gen = torch.Generator().manual_seed(11)
    q, k, v = make_qkv(2, 4, 2, 6, 70, 32, dtype, device, gen)
    mask = make_mask("3d", 2, 6, gen, device)
    out = tree_attention(q, k, v, mask)
    assert out.dtype == dtype and out.shape == q.shape and out.device == q.device
    exact = ref.tree_attention_ref(q.double(), k.double(), v.double(), mask)
    baseline = torch_in_dtype(q, k, v, mask, 32**-0.5)
    assert_matches_reference(out, exact, baseline=baseline, atol=ATOL[dtype])


@pytest.mark.parametrize("num_splits", [1, 2, 3, 5, 8, 40])
@pytest.mark.parametrize("kind", ["none", "3d"])
def test_forced_split_counts_write_every_partial(num_splits, kind, device):
    """Splits 1 .. more than the 8 key blocks (empty splits must write o = 0, lse = -inf)."""
    b, hq, hk, n, length, d = 2, 4, 2, 7, 123, 16
    gen = torch.Generator().manual_seed(num_splits)
    q, k, v = make_qkv(b, hq, hk, n, length, d, torch.float32, device, gen)
    mask = make_mask(kind, b, n, gen, device)
    part_o = nan_filled((b, hq, n, num_splits, d), torch.float32, device)
    part_lse = nan_filled((b, hq, n, num_splits), torch.float32, device)
    check_against_reference(
        q, k, v, mask, num_splits=num_splits, block_n=16, partial_out=part_o, partial_lse=part_lse
    )
    if num_splits > 1:
        assert not torch.isnan(part_o).any() and not torch.isnan(part_lse).any()
        blocks = -(-length // 16)
        if num_splits > blocks:  # trailing empty splits
            assert (part_lse[..., blocks:] == float("-inf")).all()
            assert (part_o[..., blocks:, :] == 0).all()
    else:  # the single-split path writes the output directly and leaves the scratch alone
        assert torch.isnan(part_o).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("num_splits", [1, 3])
def test_non_contiguous_inputs_and_output(dtype, num_splits, device):
    b, hq, hk, n, length, d = 2, 8, 2, 11, 90, 32
    gen = torch.Generator().manual_seed(5)
    q, k, v = make_qkv(b, hq, hk, n, length, d, dtype, device, gen, kv_layout="blhd")
    q = torch.randn(b, n, hq, d, generator=gen).to(device=device, dtype=dtype).transpose(1, 2)
    # any bool matrix is a legal mask: a transposed (column-major) one with all-False rows
    mask = (torch.rand(b, n, n, generator=gen) < 0.4).to(device).transpose(1, 2)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    assert not mask.is_contiguous()
    out = nan_filled((b, n, hq, d), dtype, device).transpose(1, 2)
    check_against_reference(q, k, v, mask, out=out, num_splits=num_splits, block_n=16)


@pytest.mark.parametrize("num_splits", [None, 1, 4])
def test_node_that_sees_nothing_gets_zero(num_splits, device):
    b, hq, hk, n, d = 2, 4, 2, 6, 16
    gen = torch.Generator().manual_seed(7)
    q, k, v = make_qkv(b, hq, hk, n, n, d, torch.float32, device, gen)  # L == N: no prefix
    mask = torch.rand(b, n, n, generator=gen) < 0.5
    mask[0, 2] = False
    mask[1, 0] = False
    mask[1, 5] = False
    mask = mask.to(device)
    out = check_against_reference(q, k, v, mask, num_splits=num_splits, block_n=16)
    assert (out[0, :, 2] == 0).all() and (out[1, :, 0] == 0).all() and (out[1, :, 5] == 0).all()


def test_all_false_rows_with_prefix_still_see_prefix(device):
    gen = torch.Generator().manual_seed(8)
    q, k, v = make_qkv(1, 2, 1, 4, 50, 16, torch.float32, device, gen)
    mask = torch.zeros(4, 4, dtype=torch.bool, device=device)
    check_against_reference(q, k, v, mask, num_splits=2, block_n=16)


def test_broadcast_batch_mask_and_custom_scale(device):
    gen = torch.Generator().manual_seed(9)
    q, k, v = make_qkv(2, 4, 2, 8, 40, 16, torch.float32, device, gen)
    mask = make_mask("3d", 1, 8, gen, device)  # [1, N, N]
    out = check_against_reference(q, k, v, mask, scale=0.37)
    exact2 = ref.tree_attention_ref(q.double(), k.double(), v.double(), mask[0], scale=0.37)
    assert_matches_reference(out, exact2, atol=1e-5)


def test_empty_tree_and_empty_inputs(device):
    q = torch.randn(2, 4, 0, 16, device=device)
    k = v = torch.randn(2, 2, 5, 16, device=device)
    out = tree_attention(q, k, v)
    assert out.shape == (2, 4, 0, 16)
    out = tree_attention(q, k[:, :, :0], v[:, :, :0], torch.zeros(0, 0, dtype=torch.bool))
    assert out.shape == (2, 4, 0, 16)
    q0 = torch.randn(0, 4, 3, 16, device=device)
    k0 = torch.randn(0, 2, 5, 16, device=device)
    assert tree_attention(q0, k0, k0).shape == (0, 4, 3, 16)


def test_deterministic(device):
    gen = torch.Generator().manual_seed(10)
    q, k, v = make_qkv(1, 8, 2, 26, 250, 64, torch.float16, device, gen)
    mask = make_mask("2d", 1, 26, gen, device)
    a = ta._tree_attention_triton(q, k, v, mask, 0.125, num_splits=4, block_n=16)
    b = ta._tree_attention_triton(q, k, v, mask, 0.125, num_splits=4, block_n=16)
    assert torch.equal(a, b)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    b=st.integers(1, 2),
    hk=st.integers(1, 2),
    group=st.sampled_from([1, 2, 4, 7]),
    n=st.integers(1, 24),
    prefix=st.integers(0, 90),
    d=st.sampled_from([16, 20, 64]),
    kind=st.sampled_from(["none", "2d", "3d"]),
    splits=st.sampled_from([None, 1, 2, 6]),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_cpu(b, hk, group, n, prefix, d, kind, splits, dtype, seed):
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    q, k, v = make_qkv(b, hk * group, hk, n, prefix + n, d, dtype, device, gen)
    mask = make_mask(kind, b, n, gen, device)
    check_against_reference(q, k, v, mask, num_splits=splits, block_n=16)


# --------------------------------------------------------------------------------------------
# Static buffers and device lengths (graph-capturable decode)
# --------------------------------------------------------------------------------------------
def _poison_tail(k, v, lengths):
    """NaN past each row's length: those keys must never be read."""
    for b, length in enumerate(lengths):
        k[b, :, length:] = float("nan")
        v[b, :, length:] = float("nan")


def check_lengths(q, k, v, mask, lengths, out, **launch):
    """The launcher with device ``lengths`` against the fp64 oracle on each row's prefix."""
    scale = q.shape[-1] ** -0.5
    out.fill_(float("nan"))
    got = ta._tree_attention_triton(q, k, v, mask, scale, lengths=lengths, out=out, **launch)
    assert got is out
    for b, length in enumerate(lengths.expand(q.shape[0]).tolist()):
        mask_b = mask if mask is None or mask.dim() == 2 else mask[b if mask.shape[0] > 1 else 0]
        qb, kb, vb = q[b : b + 1], k[b : b + 1, :, :length], v[b : b + 1, :, :length]
        exact = ref.tree_attention_ref(qb.double(), kb.double(), vb.double(), mask_b, scale=scale)
        baseline = torch_in_dtype(qb, kb, vb, mask_b, scale)
        assert_matches_reference(
            out[b : b + 1], exact, baseline=baseline, atol=ATOL[q.dtype], name=f"row {b}"
        )


@pytest.mark.parametrize("splits", [None, 1, 3, 7])
@pytest.mark.parametrize("kind", ["none", "2d", "3d"])
def test_one_static_buffer_at_every_length(kind, splits, device):
    """One static K/V buffer, one static lengths tensor updated in place, one output buffer:
    every length (per batch row, N up to the buffer) matches the op on that prefix, and the keys
    past the length (NaN) are never read. The split count is fixed by the buffer, so the same
    launch serves every length (as a captured CUDA graph would)."""
    b, hq, hk, n, buf, d = 2, 8, 2, 5, 131, 16
    gen = torch.Generator().manual_seed(40 + (splits or 0))
    q, k, v = make_qkv(b, hq, hk, n, buf, d, torch.float32, device, gen)
    mask = make_mask(kind, b, n, gen, device)
    k0, v0 = k.clone(), v.clone()
    lengths = torch.zeros(b, dtype=torch.int32, device=device)
    out = nan_filled(q.shape, q.dtype, device)
    for now in ([n, n], [37, 90], [buf, 61], [17, buf]):
        lengths.copy_(torch.tensor(now))
        k.copy_(k0)
        v.copy_(v0)
        _poison_tail(k, v, now)
        check_lengths(q, k, v, mask, lengths, out, num_splits=splits, block_n=16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_lengths_gqa_ratios_and_scalar_length(dtype, device):
    gen = torch.Generator().manual_seed(41)
    for group, n in [(1, 1), (2, 3), (4, 9), (7, 2)]:
        q, k, v = make_qkv(1, 2 * group, 2, n, 77, 24, dtype, device, gen)
        length = torch.tensor(int(torch.randint(n, 78, (1,), generator=gen)), device=device)
        _poison_tail(k, v, [int(length)])
        out = nan_filled(q.shape, dtype, device)
        check_lengths(q, k, v, None, length, out, block_n=16)


def test_lengths_public_function_and_reference_agree(device, monkeypatch):
    gen = torch.Generator().manual_seed(42)
    q, k, v = make_qkv(2, 4, 2, 6, 50, 16, torch.float32, device, gen)
    mask = make_mask("3d", 2, 6, gen, device)
    lengths = torch.tensor([20, 50], dtype=torch.int64, device=device)
    got = tree_attention(q, k, v, mask, lengths=lengths)
    monkeypatch.setenv("SPECVLM_KERNELS_BACKEND", "reference")
    want = tree_attention(q, k, v, mask, lengths=lengths)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_lengths_are_clamped_by_the_kernel():
    """On CUDA the values are not checked (no sync): the kernel clamps them to [N, L], so a bad
    length cannot read outside the buffer. Checked here through the launcher directly."""
    gen = torch.Generator().manual_seed(43)
    q, k, v = make_qkv(2, 2, 1, 4, 30, 16, torch.float32, torch.device("cpu"), gen)
    out = nan_filled(q.shape, q.dtype, q.device)
    got = ta._tree_attention_triton(q, k, v, None, 0.25, lengths=torch.tensor([1, 500]), out=out)
    want = ref.tree_attention_ref(q, k, v, None, scale=0.25, lengths=torch.tensor([4, 30]))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Dispatch: the CPU path really ran Triton
# --------------------------------------------------------------------------------------------
def test_cpu_runs_triton_not_the_reference(monkeypatch):
    if backend_for(torch.device("cpu")) != TRITON:
        pytest.skip("the interpreter is off (a CUDA machine)")

    def boom(*args, **kwargs):
        raise AssertionError("fell back to the reference")

    monkeypatch.setattr(ta, "tree_attention_ref", boom)
    gen = torch.Generator().manual_seed(12)
    q, k, v = make_qkv(1, 2, 1, 3, 20, 16, torch.float32, "cpu", gen)
    out = tree_attention(q, k, v)
    exact = ref.tree_attention_ref(q.double(), k.double(), v.double())
    assert_matches_reference(out, exact, atol=1e-5)


def test_forced_reference_backend_returns_reference(monkeypatch):
    monkeypatch.setenv("SPECVLM_KERNELS_BACKEND", "reference")

    def boom(*args, **kwargs):
        raise AssertionError("Triton launcher ran")

    monkeypatch.setattr(ta, "_tree_attention_triton", boom)
    gen = torch.Generator().manual_seed(13)
    q, k, v = make_qkv(1, 2, 1, 3, 20, 16, torch.float32, "cpu", gen)
    mask = make_mask("2d", 1, 3, gen, "cpu")
    assert torch.equal(tree_attention(q, k, v, mask), ref.tree_attention_ref(q, k, v, mask))


# --------------------------------------------------------------------------------------------
# Split heuristic and merge configuration
# --------------------------------------------------------------------------------------------
def test_split_heuristic(monkeypatch):
    dev = torch.device("cuda", 99)  # fake device: only the cached SM count is read
    monkeypatch.setitem(dispatch._SM_COUNT, ("cuda", 99), 132)
    # decode, 8 KV heads, 64k keys in 1024 blocks: 16 splits = 128 programs, one full wave
    assert ta._choose_splits(65536, 64, 8, 8, 2, dev) == 16
    # 28/4 heads (one row tile per KV head), 32k keys: 32 splits, 128 programs in one wave
    assert ta._choose_splits(32768, 64, 4, 7, 2, dev) == 32
    # 64 programs of 64-row tiles, 2048 keys: 2 splits fill one wave (at most 4: every split
    # keeps >= 16 * 64 / 2 = 512 keys)
    assert ta._choose_splits(2048, 64, 64, 64, 2, dev) == 2
    # a single block never splits; too few keys per split -> no split
    assert ta._choose_splits(64, 64, 1, 16, 2, dev) == 1
    assert ta._choose_splits(200, 64, 1, 16, 2, dev) == 1
    # enough programs already: no split
    assert ta._choose_splits(8192, 64, 4096, 16, 2, dev) == 1
    # one program per split at 1M keys: close to MAX_SPLITS (63: within 2% of 64), never more
    assert 60 <= ta._choose_splits(1 << 20, 64, 1, 16, 2, dev) <= ta.MAX_SPLITS
    # the interpreter pretends 2 SMs: few splits
    assert ta._choose_splits(300, 32, 1, 16, 4, torch.device("cpu")) == 2


def test_merge_config(monkeypatch):
    dev = torch.device("cuda", 99)
    monkeypatch.setitem(dispatch._SM_COUNT, ("cuda", 99), 132)
    # decode on 28 heads: one row per program, 2 column blocks of 64 -> 56 programs
    assert ta._merge_config(28, 14, 128, dev) == {
        "ROWS": 1,
        "BLOCK_S": 16,
        "BLOCK_D": 64,
        "num_warps": 4,
    }
    # 64 heads x 64 nodes: 4 rows per program still leave 2048 programs
    assert ta._merge_config(4096, 4, 128, dev)["ROWS"] == 4
    assert ta._merge_config(28, 40, 128, dev)["BLOCK_S"] == ta.MAX_SPLITS
    assert ta._merge_config(10, 64, 20, dev)["BLOCK_D"] == 32


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
def _ok(b=1, hq=4, hk=2, n=3, length=8, d=16, dtype=torch.float32):
    return (
        torch.randn(b, hq, n, d, dtype=dtype),
        torch.randn(b, hk, length, d, dtype=dtype),
        torch.randn(b, hk, length, d, dtype=dtype),
    )


def test_error_not_a_tensor():
    q, k, v = _ok()
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        tree_attention(q.tolist(), k, v)
    with pytest.raises(TypeError, match="k must be a torch.Tensor"):
        tree_attention(q, None, v)
    with pytest.raises(TypeError, match="v must be a torch.Tensor"):
        tree_attention(q, k, 3.0)


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_error_wrong_rank(name):
    args = dict(zip("qkv", _ok(), strict=True))
    args[name] = args[name][0]
    with pytest.raises(ValueError, match=f"{name} must have 4 dimensions"):
        tree_attention(args["q"], args["k"], args["v"])


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32, torch.bool])
def test_error_unsupported_dtype(dtype):
    q, k, v = _ok()
    with pytest.raises(TypeError, match="q must have dtype in"):
        tree_attention(q.to(dtype), k, v)


def test_error_mismatched_dtypes():
    q, k, v = _ok()
    with pytest.raises(TypeError, match="k has dtype"):
        tree_attention(q, k.half(), v)
    with pytest.raises(TypeError, match="v has dtype"):
        tree_attention(q, k, v.half())


def test_error_mismatched_devices():
    q, k, v = _ok()
    with pytest.raises(ValueError, match="k is on meta"):
        tree_attention(q, k.to("meta"), v)
    with pytest.raises(ValueError, match="v is on meta"):
        tree_attention(q, k, v.to("meta"))


def test_error_shapes():
    q, k, v = _ok(b=2)
    with pytest.raises(ValueError, match=r"k must have shape \[B=2"):
        tree_attention(q, k[:1], v[:1])
    with pytest.raises(ValueError, match=r"k must have shape .*D=16"):
        tree_attention(q, k[..., :8], v[..., :8])
    with pytest.raises(ValueError, match="v must have the shape of k"):
        tree_attention(q, k, v[:, :, :5])
    with pytest.raises(ValueError, match="head dimension"):
        tree_attention(q[..., :0], k[..., :0], v[..., :0])


def test_error_gqa_ratio():
    q, k, v = _ok(hq=4, hk=3)
    with pytest.raises(ValueError, match="multiple of that of k"):
        tree_attention(q, k, v)


def test_error_more_nodes_than_keys():
    q, k, v = _ok(n=9, length=8)
    with pytest.raises(ValueError, match="N <= L"):
        tree_attention(q, k, v)


def test_error_mask_type_and_dtype():
    q, k, v = _ok()
    with pytest.raises(TypeError, match="tree_mask must be a torch.Tensor or None"):
        tree_attention(q, k, v, [[True] * 3] * 3)
    for dtype in (torch.uint8, torch.float32, torch.int64):
        with pytest.raises(TypeError, match="tree_mask must have dtype bool"):
            tree_attention(q, k, v, torch.ones(3, 3, dtype=dtype))


@pytest.mark.parametrize("shape", [(3,), (4, 3), (3, 4), (2, 3, 3), (1, 1, 3, 3), (1, 3, 4)])
def test_error_mask_shape(shape):
    q, k, v = _ok(b=1)
    with pytest.raises(ValueError, match="tree_mask must have shape"):
        tree_attention(q, k, v, torch.ones(shape, dtype=torch.bool))


def test_error_mask_device():
    q, k, v = _ok()
    with pytest.raises(ValueError, match="tree_mask is on meta"):
        tree_attention(q, k, v, torch.ones(3, 3, dtype=torch.bool, device="meta"))


def test_error_lengths():
    q, k, v = _ok(b=2, n=3, length=8)
    with pytest.raises(TypeError, match="lengths must be a torch.Tensor or None"):
        tree_attention(q, k, v, lengths=[5, 6])
    with pytest.raises(TypeError, match="lengths must have dtype int32 or int64"):
        tree_attention(q, k, v, lengths=torch.tensor([5.0, 6.0]))
    with pytest.raises(ValueError, match=r"lengths must have shape \[\] or \[B=2\]"):
        tree_attention(q, k, v, lengths=torch.tensor([5, 6, 7]))
    with pytest.raises(ValueError, match="lengths is on meta"):
        tree_attention(q, k, v, lengths=torch.tensor([5, 6], device="meta"))
    with pytest.raises(ValueError, match=r"lengths must be in \[N=3, L=8\]"):
        tree_attention(q, k, v, lengths=torch.tensor([2, 6]))
    with pytest.raises(ValueError, match=r"lengths must be in \[N=3, L=8\]"):
        tree_attention(q, k, v, lengths=torch.tensor(9))


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_error_bad_scale_value(scale):
    with pytest.raises(ValueError, match="scale must be a finite positive number"):
        tree_attention(*_ok(), scale=scale)


@pytest.mark.parametrize("scale", ["0.1", True, torch.tensor(0.1)])
def test_error_bad_scale_type(scale):
    with pytest.raises(TypeError, match="scale must be a float or None"):
        tree_attention(*_ok(), scale=scale)


# --------------------------------------------------------------------------------------------
# GPU only
# --------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,kind", [(1, "none"), (26, "2d"), (64, "3d")])
def test_long_prefix_default_splits_gpu(dtype, n, kind):
    """Long prefixes with the heuristic's split count (several splits, full-size blocks)."""
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(n)
    q, k, v = make_qkv(1, 28, 4, n, 20000 + n, 128, dtype, device, gen, kv_layout="blhd")
    mask = make_mask(kind, 1, n, gen, device)
    check_against_reference(q, k, v, mask)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,kind", [(1, "none"), (48, "2d")])
def test_llava_72b_heads_at_32k_gpu(dtype, n, kind):
    """64/8 heads (LLaVA-OV-72B), 32k keys: the heuristic's splits and the merge at full size."""
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(n + 1)
    q, k, v = make_qkv(1, 64, 8, n, 32768, 128, dtype, device, gen, kv_layout="blhd")
    mask = make_mask(kind, 1, n, gen, device)
    check_against_reference(q, k, v, mask)


@pytest.mark.gpu
def test_fp32_long_prefix_gpu():
    """fp32 (exact-fp32 dots on FMA units, 16 x 32 tiles) at a real head layout."""
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(3)
    q, k, v = make_qkv(1, 28, 4, 8, 8192, 128, torch.float32, device, gen)
    check_against_reference(q, k, v, make_mask("2d", 1, 8, gen, device))


@pytest.mark.gpu
def test_inputs_on_a_device_that_is_not_current_gpu():
    """device_map="auto" puts layers on several GPUs: the launch must run on the inputs'
    device, not the current one."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    device = torch.device("cuda", 1)
    gen = torch.Generator().manual_seed(4)
    with torch.cuda.device(0):
        q, k, v = make_qkv(1, 28, 4, 8, 3000, 128, torch.float16, device, gen)
        check_against_reference(q, k, v, make_mask("2d", 1, 8, gen, device))


@pytest.mark.gpu
@pytest.mark.parametrize("n,kind", [(1, "none"), (48, "2d")])
def test_cuda_graph_replays_at_every_length(n, kind):
    """A decode (N = 1) or verification (N = 48) step captured once on static buffers of 64k
    keys replays at lengths from N to 64k: the kernel reads the length on the device."""
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(22)
    b, hq, hk, buf, d = 1, 28, 4, 65536, 128
    sq, sk, sv = make_qkv(b, hq, hk, n, buf, d, torch.float16, device, gen)
    smask = make_mask(kind, b, n, gen, device)
    lengths = torch.full((b,), buf, dtype=torch.int32, device=device)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile and cache the SM count outside the capture
        for _ in range(2):
            tree_attention(sq, sk, sv, smask, lengths=lengths)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = tree_attention(sq, sk, sv, smask, lengths=lengths)

    for length in (n, 1000, 4097, 32768, buf):
        lengths.fill_(length)
        sq.copy_(torch.randn(sq.shape, generator=gen).to(device=device, dtype=sq.dtype))
        _poison_tail(sk, sv, [length])
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        kk, vv = sk[:, :, :length], sv[:, :, :length]
        exact = ref.tree_attention_ref(sq.double(), kk.double(), vv.double(), smask)
        baseline = torch_in_dtype(sq, kk, vv, smask, d**-0.5)
        assert_matches_reference(
            out, exact, baseline=baseline, atol=ATOL[torch.float16], name=f"length {length}"
        )
        sk[:, :, length:] = torch.randn_like(sk[:, :, length:])  # un-poison for the next one
        sv[:, :, length:] = torch.randn_like(sv[:, :, length:])


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["none", "2d"])
def test_cuda_graph_capture_and_replay(kind):
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(21)
    b, hq, hk, n, length, d = 1, 8, 2, 26, 4096, 64
    sq, sk, sv = make_qkv(b, hq, hk, n, length, d, torch.float16, device, gen)
    smask = make_mask("2d", b, n, gen, device) if kind == "2d" else None

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile and cache the SM count outside the capture
        for _ in range(2):
            tree_attention(sq, sk, sv, smask)
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = tree_attention(sq, sk, sv, smask)

    for trial in range(3):
        q, k, v = make_qkv(b, hq, hk, n, length, d, torch.float16, device, gen)
        sq.copy_(q)
        sk.copy_(k)
        sv.copy_(v)
        if smask is not None:
            smask.copy_(make_mask("2d", b, n, gen, device))
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        exact = ref.tree_attention_ref(sq.double(), sk.double(), sv.double(), smask)
        baseline = torch_in_dtype(sq, sk, sv, smask, d**-0.5)
        assert_matches_reference(
            out, exact, baseline=baseline, atol=ATOL[torch.float16], name=f"replay {trial}"
        )
