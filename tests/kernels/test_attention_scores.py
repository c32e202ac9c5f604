"""specvlm_kernels.attention_scores: Triton kernel vs the plain-PyTorch reference.

On the CPU the kernels run under the Triton interpreter (conftest sets TRITON_INTERPRET=1) with
16 x 16 tiles, so small shapes still span several key blocks and packed row tiles; tests also
force other tile sizes. bf16 runs only on a GPU.

Tolerance (``assert_matches_reference``): the kernel's max error against an fp64 reference may
be at most twice that of a plain PyTorch implementation in the input dtype (scores and softmax in
that dtype, mean in fp32), plus an atol of a few fp32 ulps of the largest probability (the kernel
accumulates in fp32 and rounds only the products in q.k for 16-bit inputs on the GPU).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specvlm_kernels import reference as ref
from specvlm_kernels._dispatch import TRITON, backend_for
from specvlm_kernels.attention_scores import video_attention_scores
from tests.kernels._helpers import assert_matches_reference, nan_filled

# The package re-exports the function under another name, but import the module explicitly.
vas = importlib.import_module("specvlm_kernels.attention_scores")

ATOL = {torch.float32: 1e-6, torch.float16: 1e-5, torch.bfloat16: 1e-4}
DTYPES = [torch.float32, torch.float16, pytest.param(torch.bfloat16, marks=pytest.mark.gpu)]


def _inputs(b, hq, hk, lq, lk, d, dtype, device, seed=0, spread=1.0):
    gen = torch.Generator().manual_seed(seed)
    q = (spread * torch.randn(b, hq, lq, d, generator=gen)).to(device=device, dtype=dtype)
    k = (spread * torch.randn(b, hk, lk, d, generator=gen)).to(device=device, dtype=dtype)
    return q, k


def _exact(q, k, vs, ve, **kw):
    return ref.video_attention_scores_ref(q.double(), k.double(), vs, ve, **kw)


def _baseline(q, k, vs, ve, **kw):
    """Plain PyTorch at the input precision (scores + softmax in q.dtype)."""
    b, hq, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    scale = kw.get("scale") or d**-0.5
    q_offset = kw.get("q_offset")
    q_offset = lk - lq if q_offset is None else q_offset
    kk = k.repeat_interleave(hq // hk, dim=1)
    s = torch.matmul(q, kk.transpose(-1, -2)) * scale
    rows = torch.arange(lq, device=q.device)[:, None] + q_offset
    s = s.masked_fill(torch.arange(lk, device=q.device)[None, :] > rows, float("-inf"))
    upcast = q.dtype == torch.bfloat16 and q.device.type == "cpu"
    p = torch.softmax(s.float() if upcast else s, dim=-1).to(q.dtype)
    return p[..., vs:ve].float().mean(dim=(1, 2))


def _run(q, k, vs, ve, *, scale=None, q_offset=None, **launch):
    """The Triton path writing into a NaN-filled buffer (no accumulation)."""
    if backend_for(q.device) != TRITON:
        pytest.skip("Triton backend not active (set TRITON_INTERPRET=1 on a CPU-only machine)")
    lk, lq = k.shape[2], q.shape[2]
    out = nan_filled((q.shape[0], ve - vs), torch.float32, q.device)
    return vas._video_attention_scores_triton(
        q,
        k,
        vs,
        ve,
        scale if scale is not None else q.shape[-1] ** -0.5,
        lk - lq if q_offset is None else q_offset,
        out,
        accumulate=False,
        **launch,
    )


def _check(q, k, vs, ve, dtype, *, launch=None, **kw):
    """``launch``: overrides for the launcher (tile sizes, split count, scratch buffers)."""
    out = _run(q, k, vs, ve, **(launch or {}), **kw)
    assert out.dtype == torch.float32
    assert_matches_reference(
        out, _exact(q, k, vs, ve, **kw), baseline=_baseline(q, k, vs, ve, **kw), atol=ATOL[dtype]
    )


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "b,hq,hk,lq,lk,d",
    [
        (1, 1, 1, 1, 1, 16),  # one key, one row
        (1, 2, 2, 5, 37, 16),  # MHA, odd lengths
        (2, 4, 2, 3, 50, 64),  # GQA 2
        (1, 4, 1, 7, 41, 16),  # GQA 4, G * Lq = 28 spans two 16-row tiles
        (1, 7, 1, 3, 33, 128),  # GQA 7, D = 128
        (1, 3, 1, 1, 29, 24),  # Lq = 1, D not a power of two
        (3, 2, 1, 9, 9, 16),  # Lq = Lk: the whole sequence is query rows
    ],
)
@pytest.mark.parametrize("span", ["start", "middle", "end", "all"])
def test_matches_reference(dtype, b, hq, hk, lq, lk, d, span, device):
    q, k = _inputs(b, hq, hk, lq, lk, d, dtype, device, seed=lk * 31 + lq)
    vs, ve = {
        "start": (0, lk // 2),
        "middle": (lk // 4, lk - lk // 4),
        "end": (lk // 2, lk),
        "all": (0, lk),
    }[span]
    _check(q, k, vs, ve, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q_offset", [0, 5, 17, 30])
def test_q_offset_mid_sequence(dtype, q_offset, device):
    """Query rows in the middle of the key sequence: video keys after a row are invisible to it,
    and some video keys may be seen by no row at all."""
    lq, lk = 6, 36
    q, k = _inputs(1, 4, 2, lq, lk, 32, dtype, device, seed=q_offset)
    _check(q, k, 3, 31, dtype, q_offset=q_offset)


def test_scale_and_large_logits(device):
    """Large, peaked logits: the log-sum-exp must not overflow; a custom scale is honoured."""
    q, k = _inputs(1, 2, 1, 4, 40, 16, torch.float32, device, seed=3, spread=6.0)
    _check(q, k, 0, 40, torch.float32, scale=0.9)


@pytest.mark.parametrize("block_m,block_n", [(16, 32), (32, 16), (64, 64)])
def test_tile_sizes(block_m, block_n, device):
    q, k = _inputs(2, 6, 2, 5, 70, 16, torch.float32, device, seed=block_m + block_n)
    _check(q, k, 10, 61, torch.float32, launch=dict(block_m=block_m, block_n=block_n))


@pytest.mark.parametrize("num_splits", [1, 2, 3, 5, 9])
@pytest.mark.parametrize("group,lq", [(1, 1), (2, 5), (4, 7), (7, 3)])
def test_split_k_row_lse(num_splits, group, lq, device):
    """Split-K first pass: every split count (up to more splits than the 6 key blocks of some
    row tiles, which leaves splits empty) merges to the unsplit log-sum-exp; the scratch is
    pre-filled with NaN and must be fully written."""
    lk = 83
    q, k = _inputs(2, 2 * group, 2, lq, lk, 16, torch.float32, device, seed=num_splits + lq)
    if backend_for(q.device) != TRITON:
        pytest.skip("Triton backend not active")
    b, hq = q.shape[0], q.shape[1]
    lse = nan_filled((b, hq, lq), torch.float32, device)
    partials = nan_filled((b, hq, lq, num_splits, 2), torch.float32, device)
    launch = dict(num_splits=num_splits, lse=lse, partials=partials)
    _check(q, k, 3, 71, torch.float32, launch=launch, q_offset=40)
    assert not torch.isnan(lse).any()
    if num_splits > 1:
        assert not torch.isnan(partials).any()
    else:  # one split writes the log-sum-exp directly and leaves the scratch alone
        assert torch.isnan(partials).all()


def test_split_count_heuristic(monkeypatch):
    from specvlm_kernels import _dispatch as dispatch

    dev = torch.device("cuda", 97)
    monkeypatch.setitem(dispatch._SM_COUNT, ("cuda", 97), 132)
    # Qwen2.5-VL-7B at Lq = 64: 7 row tiles x 4 KV heads = 28 programs over 64k keys -> split
    assert vas._num_splits(7, 1, 4, 65536 + 96, 64, dev) > 1
    # LLaVA-OV-72B at Lq = 256: 32 x 8 = 256 programs: two waves already, no split
    assert vas._num_splits(32, 1, 8, 16384, 64, dev) == 1
    # short prompts keep at least 4 key blocks per split
    assert vas._num_splits(1, 1, 1, 200, 64, dev) == 1
    assert vas._num_splits(1, 1, 1, 1 << 22, 64, dev) <= vas.MAX_SPLITS


def test_strided_inputs(device):
    """Non-contiguous q and k ([B, L, H, D] storage transposed, as a model's projections are)."""
    gen = torch.Generator().manual_seed(11)
    q = torch.randn(2, 5, 4, 32, generator=gen).to(device).transpose(1, 2)
    k = torch.randn(2, 45, 2, 32, generator=gen).to(device).transpose(1, 2)
    assert not q.is_contiguous() and not k.is_contiguous()
    _check(q, k, 7, 40, torch.float32)


@settings(max_examples=15, deadline=None)
@given(
    b=st.integers(1, 2),
    hk=st.integers(1, 2),
    group=st.sampled_from([1, 2, 3, 4]),
    lq=st.integers(1, 9),
    extra=st.integers(0, 40),
    d=st.sampled_from([8, 16, 40]),
    data=st.data(),
)
def test_random_shapes(b, hk, group, lq, extra, d, data):
    device = torch.device("cpu")
    lk = lq + extra
    vs = data.draw(st.integers(0, lk))
    ve = data.draw(st.integers(vs, lk))
    q_offset = data.draw(st.integers(0, lk - lq))
    q, k = _inputs(b, hk * group, hk, lq, lk, d, torch.float32, device, seed=lk + vs)
    _check(q, k, vs, ve, torch.float32, q_offset=q_offset)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "hq,hk,lq,nv",
    [
        (28, 4, 64, 65536),  # Qwen2.5-VL-7B / LLaVA-OV-7B, Lq = 64: split-K first pass
        (28, 4, 256, 16384),
        (64, 8, 64, 65536),  # LLaVA-OV-72B
        (16, 2, 128, 32768),  # Qwen2.5-VL-3B
    ],
)
def test_real_model_shapes_gpu(dtype, hq, hk, lq, nv):
    """Real head layouts, D = 128, 32 system tokens, Nv video tokens, Lq text rows (Lk up to
    64k), with the launcher's own configuration and split count."""
    device = torch.device("cuda")
    lk = 32 + nv + lq
    q, k = _inputs(1, hq, hk, lq, lk, 128, dtype, device, seed=nv + lq)
    _check(q, k, 32, 32 + nv, dtype)


@pytest.mark.gpu
def test_fp32_real_shape_gpu():
    """fp32 inputs use the 16 x 32 tiles with 8 warps (no register spills)."""
    device = torch.device("cuda")
    q, k = _inputs(1, 28, 4, 64, 8192 + 96, 128, torch.float32, device, seed=5)
    _check(q, k, 32, 8192 + 32, torch.float32)


@pytest.mark.gpu
def test_inputs_on_a_device_that_is_not_current_gpu():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    device = torch.device("cuda", 1)
    with torch.cuda.device(0):
        q, k = _inputs(1, 28, 4, 16, 5000, 128, torch.float16, device, seed=6)
        _check(q, k, 32, 4000, torch.float16)


# --------------------------------------------------------------------------------------------
# Semantics of the public function
# --------------------------------------------------------------------------------------------
def test_public_function_allocates_fp32(device):
    q, k = _inputs(1, 2, 1, 3, 20, 16, torch.float16, device)
    out = video_attention_scores(q, k, 4, 12)
    assert out.dtype == torch.float32 and out.shape == (1, 8)
    assert_matches_reference(
        out, _exact(q, k, 4, 12), baseline=_baseline(q, k, 4, 12), atol=ATOL[torch.float16]
    )


def test_out_accumulates_over_layers(device):
    layers = [_inputs(2, 4, 2, 3, 30, 16, torch.float32, device, seed=s) for s in range(3)]
    acc = torch.full((2, 12), 0.5, device=device)
    returned = video_attention_scores(*layers[0], 5, 17, out=acc)
    assert returned is acc
    for q, k in layers[1:]:
        video_attention_scores(q, k, 5, 17, out=acc)
    expected = 0.5 + sum(_exact(q, k, 5, 17) for q, k in layers)
    torch.testing.assert_close(acc.double(), expected, rtol=0, atol=1e-6)


def test_full_span_of_one_row_sums_to_one(device):
    """With the span covering every visible key, the probabilities of each row sum to 1."""
    q, k = _inputs(1, 3, 3, 1, 25, 16, torch.float32, device, seed=5)
    out = video_attention_scores(q, k, 0, 25)
    torch.testing.assert_close(out.sum().item(), 1.0, rtol=0, atol=1e-5)


def test_empty_span_and_empty_batch(device):
    q, k = _inputs(2, 2, 1, 3, 10, 16, torch.float32, device)
    assert video_attention_scores(q, k, 4, 4).shape == (2, 0)
    q0, k0 = _inputs(0, 2, 1, 3, 10, 16, torch.float32, device)
    assert video_attention_scores(q0, k0, 1, 6).shape == (0, 5)


def test_deterministic(device):
    q, k = _inputs(1, 4, 2, 7, 60, 16, torch.float32, device, seed=9)
    a = video_attention_scores(q, k, 2, 50)
    b = video_attention_scores(q, k, 2, 50)
    assert torch.equal(a, b)


def test_inputs_unchanged(device):
    q, k = _inputs(1, 2, 1, 3, 20, 16, torch.float32, device)
    q0, k0 = q.clone(), k.clone()
    video_attention_scores(q, k, 0, 20)
    assert torch.equal(q, q0) and torch.equal(k, k0)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
def _bad_call(device, **over):
    q, k = _inputs(1, 4, 2, 3, 12, 16, torch.float32, device)
    args = {"q": q, "k": k, "video_start": 2, "video_end": 8}
    args.update(over)
    kw = {n: args.pop(n) for n in ("scale", "q_offset", "out") if n in args}
    q, k = args["q"], args["k"]
    return video_attention_scores(q, k, args["video_start"], args["video_end"], **kw)


@pytest.mark.parametrize(
    "over,exc,match",
    [
        ({"q": torch.zeros(4, 3, 16)}, ValueError, "q must have 4 dimensions"),
        ({"q": [[1.0]]}, TypeError, "q must be a torch.Tensor"),
        ({"k": torch.zeros(1, 2, 12, 8)}, ValueError, "k must have shape"),
        ({"k": torch.zeros(1, 3, 12, 16)}, ValueError, "multiple of"),
        ({"k": torch.zeros(1, 2, 12, 16, dtype=torch.float64)}, TypeError, "k must have dtype"),
        ({"k": torch.zeros(1, 2, 12, 16, dtype=torch.float16)}, TypeError, "they must match"),
        ({"q": torch.zeros(1, 4, 0, 16)}, ValueError, "at least one query row"),
        ({"q": torch.zeros(1, 4, 13, 16)}, ValueError, "Lq <= Lk"),
        ({"video_start": -1}, ValueError, "video_start must be in"),
        ({"video_end": 13}, ValueError, "video_end must be in"),
        ({"video_start": 5, "video_end": 4}, ValueError, "video_end must be in"),
        ({"video_start": 2.0}, TypeError, "video_start must be an int"),
        ({"q_offset": 10}, ValueError, "q_offset must be in"),
        ({"q_offset": -1}, ValueError, "q_offset must be in"),
        ({"scale": 0.0}, ValueError, "scale"),
        ({"out": torch.zeros(1, 5)}, ValueError, "out must have shape"),
        ({"out": torch.zeros(1, 6, dtype=torch.float16)}, TypeError, "out must have dtype"),
    ],
)
def test_bad_inputs(over, exc, match, device):
    over = {n: (v.to(device) if isinstance(v, torch.Tensor) else v) for n, v in over.items()}
    with pytest.raises(exc, match=match):
        _bad_call(device, **over)


def test_mismatched_devices_raise():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device kind (CUDA)")
    q, k = _inputs(1, 2, 1, 3, 10, 16, torch.float32, torch.device("cuda"))
    with pytest.raises(ValueError, match="one device"):
        video_attention_scores(q, k.cpu(), 0, 5)
    with pytest.raises(ValueError, match="one device"):
        video_attention_scores(q, k, 0, 5, out=torch.zeros(1, 5))


def test_reference_backend_agrees(device, monkeypatch):
    q, k = _inputs(1, 4, 2, 5, 33, 16, torch.float32, device, seed=2)
    triton_out = video_attention_scores(q, k, 3, 30, q_offset=20)
    monkeypatch.setenv("SPECVLM_KERNELS_BACKEND", "reference")
    ref_out = video_attention_scores(q, k, 3, 30, q_offset=20)
    torch.testing.assert_close(triton_out, ref_out, rtol=0, atol=1e-6)
