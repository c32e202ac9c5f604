"""Two-stage video-token selection (:func:`select_video_tokens`) and the fused gather of the
kept rows (:func:`prune_video_tokens`).

The semantics are those of :func:`specvlm_kernels.reference.select_video_tokens_ref` (read its
docstring and those of ``stage1_count_ref``, ``frame_quotas_ref``, ``spatial_priority`` and
``spread_pick``). The design is described in ``docs/kernels/token_select.md``; in short:

* ``_select_kernel``: one program per batch row, looping over the row in chunks of ``BLOCK``.
  Stage I finds the mass threshold by bisection over the int32 bit pattern of the
  (non-negative) fp32 scores with fp64 sums instead of sorting, Stage II places the remaining
  slots (spread over the row, or water-filled over frames and taken in spatial-priority order
  inside each frame), and a final pass compacts the kept indices in ascending order.
* ``_gather_rows_kernel`` (``prune_video_tokens`` only): copies the kept feature rows.

Launches: one for ``select_video_tokens``, two for ``prune_video_tokens``; plus the validation
reduction (one ``torch.aminmax`` and one device sync) that checks the scores are finite and
non-negative.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from specvlm_kernels._checks import (
    FLOAT_DTYPES,
    check_float,
    check_int,
    check_same_device,
    check_tensor,
)
from specvlm_kernels._dispatch import REFERENCE, backend_for
from specvlm_kernels.reference import (
    prune_video_tokens_ref,
    select_video_tokens_ref,
    spatial_priority,
)

__all__ = ["select_video_tokens", "prune_video_tokens"]

# Token positions are int32 inside the selection kernel (row offsets are int64).
MAX_TOKENS = 2**30
_NO_KEY = tl.constexpr(2**31 - 1)  # larger than the bit pattern of any finite non-negative fp32


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _spread_pick(rank, count, total):
    """Triton twin of ``reference.spread_pick`` (int64: ``(2 * rank + 2) * count`` can exceed
    2^31). Ranks of lanes the caller masks out may be negative; their result is ignored."""
    rank = rank.to(tl.int64)
    count = count.to(tl.int64)
    total = total.to(tl.int64)
    den = 2 * tl.maximum(total, 1)
    after = ((2 * rank + 2) * count + total) // den
    before = (2 * rank * count + total) // den
    return after > before


@triton.jit
def _load_block(row_ptr, idx, nv, stride_sn):
    """Scores of one block as fp32, their order-preserving int32 keys (non-negative scores sort
    like their bit patterns; -0.0 -> key 0) and the in-row mask."""
    in_row = idx < nv
    x = tl.load(row_ptr + idx.to(tl.int64) * stride_sn, mask=in_row, other=0.0).to(tl.float32)
    key = tl.maximum(x.to(tl.int32, bitcast=True), 0)
    return x, key, in_row


@triton.jit
def _select_kernel(
    scores_ptr,
    stride_sb,
    stride_sn,
    out_ptr,  # int64 [B, keep], contiguous
    flags_ptr,  # int8 [B, Nv] scratch (grid only): 0 free, 1 Stage I, 2 Stage II
    frames_ptr,  # int32 [B, 3, T] scratch (grid only): Stage-I prefix at frame ends, free, quota
    perm_ptr,  # int32 [H * W]: frame positions in spatial-priority order (grid only)
    nv,
    keep,
    mass: tl.float64,
    n_frames,
    frame_size,
    HAS_GRID: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = scores_ptr + row * stride_sb
    out_row = out_ptr + row * keep
    offs = tl.arange(0, BLOCK)

    # ---- pass 0: fp64 total and the largest key --------------------------------------------
    total = tl.zeros((), dtype=tl.float64)
    max_key = tl.zeros((), dtype=tl.int32)
    for start in range(0, nv, BLOCK):
        idx = start + offs
        x, key, in_row = _load_block(row_ptr, idx, nv, stride_sn)
        total += tl.sum(x.to(tl.float64), axis=0)
        max_key = tl.maximum(max_key, tl.max(key, axis=0))
    target = mass * total
    has_target = target > 0

    # ---- Stage I: two bisections over keys, sharing passes ---------------------------------
    # mass:  largest key tau_s with S(key >= tau_s) >= target; invariant S(lo_s) >= target,
    #        S(hi_s + 1) < target.  S(0) = total >= target; S(max_key + 1) = 0 < target.
    # count: largest key tau_c with C(key >= tau_c) >= keep (keep >= 1 here); same invariants.
    # At each failure we record the sum/count at mid = hi + 1, i.e. the values at tau + 1.
    lo_s = tl.zeros((), dtype=tl.int32)
    hi_s = tl.where(has_target, max_key, 0)
    lo_c = tl.zeros((), dtype=tl.int32)
    hi_c = max_key
    sum_above_s = tl.zeros((), dtype=tl.float64)  # S(tau_s + 1)
    cnt_at_s = tl.zeros((), dtype=tl.int32) + nv  # C(tau_s)
    cnt_above_s = tl.zeros((), dtype=tl.int32)  # C(tau_s + 1)
    cnt_above_c = tl.zeros((), dtype=tl.int32)  # C(tau_c + 1)
    while (lo_s < hi_s) | (lo_c < hi_c):
        mid_s = lo_s + (hi_s - lo_s + 1) // 2  # no lo + hi: keys reach 0x7F7FFFFF
        mid_c = lo_c + (hi_c - lo_c + 1) // 2
        s_mid = tl.zeros((), dtype=tl.float64)
        c_mid_s = tl.zeros((), dtype=tl.int32)
        c_mid_c = tl.zeros((), dtype=tl.int32)
        for start in range(0, nv, BLOCK):
            idx = start + offs
            x, key, in_row = _load_block(row_ptr, idx, nv, stride_sn)
            at_or_above_s = key >= mid_s
            s_mid += tl.sum(tl.where(at_or_above_s, x, 0.0).to(tl.float64), axis=0)
            c_mid_s += tl.sum(at_or_above_s.to(tl.int32), axis=0)
            c_mid_c += tl.sum((key >= mid_c).to(tl.int32), axis=0)
        active_s = lo_s < hi_s
        up_s = active_s & (s_mid >= target)
        down_s = active_s & (s_mid < target)
        lo_s = tl.where(up_s, mid_s, lo_s)
        cnt_at_s = tl.where(up_s, c_mid_s, cnt_at_s)
        hi_s = tl.where(down_s, mid_s - 1, hi_s)
        sum_above_s = tl.where(down_s, s_mid, sum_above_s)
        cnt_above_s = tl.where(down_s, c_mid_s, cnt_above_s)
        active_c = lo_c < hi_c
        up_c = active_c & (c_mid_c >= keep)
        down_c = active_c & (c_mid_c < keep)
        lo_c = tl.where(up_c, mid_c, lo_c)
        hi_c = tl.where(down_c, mid_c - 1, hi_c)
        cnt_above_c = tl.where(down_c, c_mid_c, cnt_above_c)

    # Ties at tau_s are taken in index order; the t-th of them is in Stage I iff the sorted
    # prefix sum before it, S(tau_s + 1) + (t - 1) * v, is still below the target (exactly the
    # reference's `cumsum < target` count). That prefix grows with t: bisection over t.
    tie_value = lo_s.to(tl.float32, bitcast=True).to(tl.float64)
    lo_t = tl.zeros((), dtype=tl.int32) + 1
    hi_t = tl.maximum(cnt_at_s - cnt_above_s, 1)
    while lo_t < hi_t:
        mid_t = lo_t + (hi_t - lo_t + 1) // 2
        below = sum_above_s + (mid_t - 1).to(tl.float64) * tie_value < target
        lo_t = tl.where(below, mid_t, lo_t)
        hi_t = tl.where(below, hi_t, mid_t - 1)
    m_mass = tl.where(has_target, cnt_above_s + lo_t, 0)

    # Stage I = the m = min(m_mass, keep) first tokens in (score desc, index asc) order:
    # every key > tau plus the first `take` tokens with key == tau in index order.
    capped = m_mass > keep
    tau = tl.where(capped, lo_c, tl.where(has_target, lo_s, _NO_KEY))
    take = tl.where(capped, keep - cnt_above_c, tl.where(has_target, lo_t, 0))
    m = tl.minimum(m_mass, keep)
    rest = keep - m  # Stage-II budget

    # ---- Stage-I flags (+ Stage II and compaction when there is no grid) -------------------
    tie_run = tl.zeros((), dtype=tl.int32)
    free_run = tl.zeros((), dtype=tl.int32)
    kept_run = tl.zeros((), dtype=tl.int32)
    for start in range(0, nv, BLOCK):
        idx = start + offs
        x, key, in_row = _load_block(row_ptr, idx, nv, stride_sn)
        tie = (key == tau) & in_row
        tie_rank = tie_run + tl.cumsum(tie.to(tl.int32), axis=0)  # 1-based among ties
        stage1 = in_row & ((key > tau) | (tie & (tie_rank <= take)))
        tie_run += tl.sum(tie.to(tl.int32), axis=0)
        if HAS_GRID:
            tl.store(flags_ptr + row * nv + idx, stage1.to(tl.int8), mask=in_row)
            # inclusive Stage-I count at each frame's last token -> per-frame counts later
            stage1_upto = kept_run + tl.cumsum(stage1.to(tl.int32), axis=0)
            frame_end = in_row & ((idx + 1) % frame_size == 0)
            tl.store(
                frames_ptr + row * 3 * n_frames + idx // frame_size, stage1_upto, mask=frame_end
            )
            kept_run += tl.sum(stage1.to(tl.int32), axis=0)
        else:
            free = in_row & (stage1 == 0)
            free_rank = free_run + tl.cumsum(free.to(tl.int32), axis=0) - 1
            kept = stage1 | (free & _spread_pick(free_rank, rest, nv - m))
            slot = kept_run + tl.cumsum(kept.to(tl.int32), axis=0) - 1
            tl.store(out_row + slot, idx.to(tl.int64), mask=kept)
            free_run += tl.sum(free.to(tl.int32), axis=0)
            kept_run += tl.sum(kept.to(tl.int32), axis=0)

    if HAS_GRID:
        tl.debug_barrier()  # the frame-end counts and flags above are read by other threads
        frames_row = frames_ptr + row * 3 * n_frames
        toffs = tl.arange(0, BLOCK_T)
        # free tokens per frame, and the largest (upper end of the water level)
        hi_l = tl.zeros((), dtype=tl.int32)
        for t0 in range(0, n_frames, BLOCK_T):
            t = t0 + toffs
            in_frames = t < n_frames
            upto = tl.load(frames_row + t, mask=in_frames, other=0)
            before = tl.load(frames_row + t - 1, mask=in_frames & (t > 0), other=0)
            free_t = tl.where(in_frames, frame_size - (upto - before), 0)
            tl.store(frames_row + n_frames + t, free_t, mask=in_frames)
            hi_l = tl.maximum(hi_l, tl.max(free_t, axis=0))
        tl.debug_barrier()
        # water level: largest L in [0, max free] with sum_t min(free_t, L) <= rest
        lo_l = tl.zeros((), dtype=tl.int32)
        while lo_l < hi_l:
            mid_l = lo_l + (hi_l - lo_l + 1) // 2
            filled = tl.zeros((), dtype=tl.int64)
            for t0 in range(0, n_frames, BLOCK_T):
                t = t0 + toffs
                in_frames = t < n_frames
                free_t = tl.load(frames_row + n_frames + t, mask=in_frames, other=0)
                filled += tl.sum(tl.minimum(free_t, mid_l).to(tl.int64), axis=0)
            fits = filled <= rest
            lo_l = tl.where(fits, mid_l, lo_l)
            hi_l = tl.where(fits, hi_l, mid_l - 1)
        base = tl.zeros((), dtype=tl.int64)
        n_room = tl.zeros((), dtype=tl.int32)
        for t0 in range(0, n_frames, BLOCK_T):
            t = t0 + toffs
            in_frames = t < n_frames
            free_t = tl.load(frames_row + n_frames + t, mask=in_frames, other=0)
            base += tl.sum(tl.minimum(free_t, lo_l).to(tl.int64), axis=0)
            n_room += tl.sum((in_frames & (free_t > lo_l)).to(tl.int32), axis=0)
        extra = rest - base
        # quotas: min(free, L) + one extra slot for a spread of the frames with room
        room_run = tl.zeros((), dtype=tl.int32)
        for t0 in range(0, n_frames, BLOCK_T):
            t = t0 + toffs
            in_frames = t < n_frames
            free_t = tl.load(frames_row + n_frames + t, mask=in_frames, other=0)
            room = in_frames & (free_t > lo_l)
            room_rank = room_run + tl.cumsum(room.to(tl.int32), axis=0) - 1
            bonus = room & _spread_pick(room_rank, extra, n_room)
            quota = tl.minimum(free_t, lo_l) + bonus.to(tl.int32)
            tl.store(frames_row + 2 * n_frames + t, quota, mask=in_frames)
            room_run += tl.sum(room.to(tl.int32), axis=0)
        tl.debug_barrier()

        # each frame takes its quota of free tokens in spatial-priority order;
        # tiles of BLOCK_F frames x BLOCK_P priority ranks, a running free count per frame
        foffs = tl.arange(0, BLOCK_F)
        poffs = tl.arange(0, BLOCK_P)
        for f0 in range(0, n_frames, BLOCK_F):
            f = f0 + foffs
            in_frames = f < n_frames
            quota = tl.load(frames_row + 2 * n_frames + f, mask=in_frames, other=0)
            free_seen = tl.zeros((BLOCK_F,), dtype=tl.int32)
            for p0 in range(0, frame_size, BLOCK_P):
                p = p0 + poffs
                in_frame = p < frame_size
                pos = tl.load(perm_ptr + p, mask=in_frame, other=0)
                tok = f[:, None] * frame_size + pos[None, :]
                in_tile = in_frames[:, None] & in_frame[None, :]
                flag = tl.load(flags_ptr + row * nv + tok, mask=in_tile, other=1)
                free = in_tile & (flag == 0)
                free_upto = free_seen[:, None] + tl.cumsum(free.to(tl.int32), axis=1)
                take_tile = free & (free_upto <= quota[:, None])
                tl.store(
                    flags_ptr + row * nv + tok,
                    tl.full((BLOCK_F, BLOCK_P), 2, tl.int8),
                    mask=take_tile,
                )
                free_seen += tl.sum(free.to(tl.int32), axis=1)
        tl.debug_barrier()

        # compaction in index order
        kept_run = tl.zeros((), dtype=tl.int32)
        for start in range(0, nv, BLOCK):
            idx = start + offs
            in_row = idx < nv
            flag = tl.load(flags_ptr + row * nv + idx, mask=in_row, other=0)
            kept = in_row & (flag != 0)
            slot = kept_run + tl.cumsum(kept.to(tl.int32), axis=0) - 1
            tl.store(out_row + slot, idx.to(tl.int64), mask=kept)
            kept_run += tl.sum(kept.to(tl.int32), axis=0)


@triton.jit
def _gather_rows_kernel(
    feat_ptr,
    idx_ptr,  # int64 [B, keep], contiguous
    out_ptr,
    keep,
    n_chan,
    n_row_blocks,
    stride_fb,
    stride_fn,
    stride_fc,
    stride_ob,
    stride_on,
    stride_oc,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    b = (pid // n_row_blocks).to(tl.int64)
    kb = pid % n_row_blocks
    rows = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    in_keep = rows < keep
    in_chan = chans < n_chan
    src = tl.load(idx_ptr + b * keep + rows, mask=in_keep, other=0)  # int64 token indices
    in_tile = in_keep[:, None] & in_chan[None, :]
    chan_off = chans[None, :].to(tl.int64)
    vals = tl.load(
        feat_ptr + b * stride_fb + src[:, None] * stride_fn + chan_off * stride_fc, mask=in_tile
    )
    row_off = rows[:, None].to(tl.int64)
    tl.store(
        out_ptr + b * stride_ob + row_off * stride_on + chan_off * stride_oc, vals, mask=in_tile
    )


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _priority_order(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Positions of an ``height x width`` frame in spatial-priority order, int32 on ``device``."""
    return torch.argsort(spatial_priority(height, width)).to(torch.int32).to(device)


def _select_config(nv: int, device: torch.device, block: int | None) -> tuple[int, int]:
    """(BLOCK, num_warps): large chunks on GPU (fewer loop trips per bisection pass), smaller
    ones under the interpreter, where each op costs a NumPy call whatever its size."""
    if block is None:
        cap = 4096 if device.type == "cuda" else 512
        block = max(16, min(cap, triton.next_power_of_2(max(nv, 1))))
    num_warps = 16 if block >= 4096 else 8 if block >= 1024 else 4
    return block, num_warps


def _launch_select(
    scores: torch.Tensor,
    keep: int,
    mass: float,
    grid: tuple[int, int, int] | None,
    *,
    block: int | None = None,
) -> torch.Tensor:
    """Run ``_select_kernel`` on validated inputs; returns int64 ``[B, keep]``. ``block``
    overrides the chunk size (tests use small ones to exercise the cross-chunk carries)."""
    nb, nv = scores.shape
    device = scores.device
    out = torch.empty(nb, keep, dtype=torch.int64, device=device)
    if nb == 0 or keep == 0:
        return out
    block, num_warps = _select_config(nv, device, block)
    if grid is None:
        n_frames, frame_size = 1, nv
        flags = frames = perm = out  # unused (HAS_GRID is False): any tensor will do
        block_t = block_f = block_p = 1
    else:
        n_frames, height, width = grid
        frame_size = height * width
        flags = torch.empty(nb, nv, dtype=torch.int8, device=device)
        frames = torch.empty(nb, 3, n_frames, dtype=torch.int32, device=device)
        perm = _priority_order(height, width, device)
        block_t = min(triton.next_power_of_2(n_frames), block)
        block_p = min(triton.next_power_of_2(frame_size), block)
        block_f = max(1, min(block // block_p, triton.next_power_of_2(n_frames)))
    _select_kernel[(nb,)](
        scores,
        scores.stride(0),
        scores.stride(1),
        out,
        flags,
        frames,
        perm,
        nv,
        keep,
        float(mass),
        n_frames,
        frame_size,
        HAS_GRID=grid is not None,
        BLOCK=block,
        BLOCK_T=block_t,
        BLOCK_F=block_f,
        BLOCK_P=block_p,
        num_warps=num_warps,
    )
    return out


def _launch_gather(features: torch.Tensor, indices: torch.Tensor, out: torch.Tensor) -> None:
    """``out[b, k, :] = features[b, indices[b, k], :]`` (``indices`` int64 contiguous)."""
    nb, keep = indices.shape
    n_chan = features.shape[2]
    if nb == 0 or keep == 0 or n_chan == 0:
        return
    block_c = min(triton.next_power_of_2(n_chan), 256 if features.device.type == "cuda" else 128)
    block_k = 16
    n_row_blocks = triton.cdiv(keep, block_k)
    _gather_rows_kernel[(nb * n_row_blocks, triton.cdiv(n_chan, block_c))](
        features,
        indices,
        out,
        keep,
        n_chan,
        n_row_blocks,
        features.stride(0),
        features.stride(1),
        features.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        BLOCK_K=block_k,
        BLOCK_C=block_c,
        num_warps=4,
    )


# --------------------------------------------------------------------------------------------
# Validation and public functions
# --------------------------------------------------------------------------------------------
def _check_grid(grid, nv: int) -> tuple[int, int, int] | None:
    if grid is None:
        return None
    if not isinstance(grid, (tuple, list)):
        raise TypeError(
            f"grid must be None or a tuple (T, H, W) of 3 ints, got {type(grid).__name__}"
        )
    if len(grid) != 3:
        raise ValueError(f"grid must have 3 entries (T, H, W), got {len(grid)}")
    dims = tuple(check_int(f"grid[{i}]", g, 1) for i, g in enumerate(grid))
    if dims[0] * dims[1] * dims[2] != nv:
        raise ValueError(
            f"grid {dims} must multiply to the number of video tokens Nv = {nv}, "
            f"got T * H * W = {dims[0] * dims[1] * dims[2]}"
        )
    return dims


def _validate(scores, keep, mass, grid) -> tuple[int, float, tuple[int, int, int] | None]:
    check_tensor("scores", scores, 2, FLOAT_DTYPES)
    nv = scores.shape[1]
    if nv > MAX_TOKENS:
        raise ValueError(f"scores has {nv} video tokens; at most {MAX_TOKENS} are supported")
    keep = check_int("keep", keep, 0, nv)
    mass = check_float("mass", mass, 0.0, 1.0)
    grid = _check_grid(grid, nv)
    return keep, mass, grid


def _check_scores_values(scores: torch.Tensor) -> None:
    """Scores are attention probabilities: finite and non-negative. One reduction (aminmax
    propagates NaN) and one device sync."""
    if scores.numel() == 0:
        return
    low, high = torch.aminmax(scores)
    if not bool((low >= 0) & (high < float("inf"))):
        raise ValueError(
            "scores must be finite and non-negative (attention probabilities); "
            "found a negative, infinite or NaN value"
        )


def select_video_tokens(
    scores: torch.Tensor,
    keep: int,
    *,
    mass: float = 0.4,
    grid: tuple[int, int, int] | list[int] | None = None,
) -> torch.Tensor:
    """Two-stage selection of ``keep`` of the ``Nv`` video tokens of each row of ``scores``.

    Args:
        scores: ``[B, Nv]`` fp16/bf16/fp32, finite and non-negative (e.g. the attention mass
            from :func:`video_attention_scores`); any strides.
        keep: number of tokens to keep per row, ``0 <= keep <= Nv``.
        mass: Stage I keeps the fewest highest-scoring tokens holding at least ``mass`` of the
            row's total score (capped at ``keep``), ``0 <= mass <= 1``.
        grid: ``(T, H, W)`` layout of the video tokens (frame-major, row-major in a frame,
            ``T * H * W == Nv``): Stage II then spreads the remaining slots evenly over the
            frames and over a coarse-to-fine lattice inside each frame. ``None``: spread over
            the unselected tokens in index order.

    Returns:
        int64 ``[B, keep]``: per row, ascending unique token indices. Identical to
        :func:`specvlm_kernels.reference.select_video_tokens_ref` (see the docs page for the
        fp64 rounding caveat of Stage I). ``B = 0`` is supported (empty result).

    Raises:
        TypeError / ValueError naming the offending argument (see the docs page).
    """
    keep, mass, grid = _validate(scores, keep, mass, grid)
    _check_scores_values(scores)
    if backend_for(scores.device) == REFERENCE:
        return select_video_tokens_ref(scores, keep, mass=mass, grid=grid)
    return _launch_select(scores, keep, mass, grid)


def prune_video_tokens(
    features: torch.Tensor,
    scores: torch.Tensor,
    keep: int,
    *,
    mass: float = 0.4,
    grid: tuple[int, int, int] | list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`select_video_tokens` followed by a gather of the kept rows of ``features``.

    Args:
        features: ``[B, Nv, C]`` fp16/bf16/fp32 on the device of ``scores`` (any strides).
        scores, keep, mass, grid: as in :func:`select_video_tokens`.

    Returns:
        ``(kept_features [B, keep, C]`` in ``features.dtype``, ``indices [B, keep]`` int64).
    """
    keep, mass, grid = _validate(scores, keep, mass, grid)
    check_tensor("features", features, 3, FLOAT_DTYPES)
    if tuple(features.shape[:2]) != tuple(scores.shape):
        raise ValueError(
            f"features must have shape [B, Nv, C] = [{scores.shape[0]}, {scores.shape[1]}, C] "
            f"to match scores, got {tuple(features.shape)}"
        )
    check_same_device(scores=scores, features=features)
    _check_scores_values(scores)
    if backend_for(scores.device) == REFERENCE:
        return prune_video_tokens_ref(features, scores, keep, mass=mass, grid=grid)
    indices = _launch_select(scores, keep, mass, grid)
    kept = torch.empty(
        features.shape[0], keep, features.shape[2], dtype=features.dtype, device=features.device
    )
    _launch_gather(features, indices, kept)
    return kept, indices
