"""Two-stage video-token selection (:func:`select_video_tokens`) and the fused gather of the
kept rows (:func:`prune_video_tokens`).

The semantics are those of :func:`specvlm_kernels.reference.select_video_tokens_ref` (read its
docstring and those of ``stage1_count_ref``, ``frame_quotas_ref``, ``spatial_priority`` and
``spread_pick``). The design is described in ``docs/kernels/token_select.md``; in short, every
launch has a grid of ``(chunks, B)`` programs (many CTAs per row, no atomics):

* ``_radix_hist_kernel``, ``P`` launches (``P = ceil(31 / RADIX_BITS)``, 8 for 4-bit digits):
  a radix select of the Stage-I threshold over the int32 bit patterns of the (non-negative)
  fp32 scores. Pass ``p`` histograms one digit of the keys that match the prefix found so far
  (per chunk: counts and fp64 sums per digit), for two searches at once: the mass threshold
  and the ``keep``-th largest key (the cap). Each program of pass ``p + 1`` first reduces the
  partial histograms of pass ``p`` (fixed chunk order) to pick that pass's digit; program 0
  stores the resulting state for the next launch.
* ``_emit_flat_kernel`` (``grid=None``): the last digit, the threshold and the tie count; each
  program then derives from the histograms how many Stage-I tokens, ties and free tokens lie
  before its chunk, and writes the kept indices of its chunk (Stage I, and the Stage-II spread
  over the free tokens, in closed form) at their output slots.
* With a frame grid, ``_grid_flags_kernel`` (chunks of whole frames) writes the Stage-I flags
  and each frame's free count, and ``_grid_walk_kernel`` water-fills the frame quotas (every
  program over all frames, from the counts), takes each of its frames' quota in spatial-priority
  order and compacts its chunk's kept indices.
* ``_gather_rows_kernel`` (``prune_video_tokens`` only): copies the kept feature rows.

No host synchronisation: the launch configuration depends on shapes only, scratch comes from
``torch.empty``, so a call can be captured in a CUDA graph (after a warm-up call, which compiles
the kernels and caches the frame's priority order on the device). Scores that are negative,
infinite or NaN are read as 0 by the kernels; the public functions reject them on CPU tensors
(and on CUDA tensors with ``SPECVLM_KERNELS_DEBUG=1``, at the cost of one sync).
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
from specvlm_kernels._dispatch import (
    REFERENCE,
    backend_for,
    check_compiled,
    device_guard,
    gpu_config,
    value_checks,
)
from specvlm_kernels.reference import (
    prune_video_tokens_ref,
    select_video_tokens_ref,
    spatial_priority,
)

__all__ = ["select_video_tokens", "prune_video_tokens"]

# Token positions are int32 inside the kernels (row offsets are int64).
MAX_TOKENS = 2**30
KEY_BITS = 31  # keys are non-negative int32: bit 31 is always 0
_NO_KEY = tl.constexpr(2**31 - 1)  # larger than the bit pattern of any finite non-negative fp32


# --------------------------------------------------------------------------------------------
# Triton helpers
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
def _picks_before(ranks, count, total):
    """How many of the ranks ``0 .. ranks - 1`` :func:`_spread_pick` picks: the pick counts
    telescope to ``before(ranks) = (2 * ranks * count + total) // (2 * max(total, 1))``."""
    ranks = ranks.to(tl.int64)
    count = count.to(tl.int64)
    total = total.to(tl.int64)
    return ((2 * ranks * count + total) // (2 * tl.maximum(total, 1))).to(tl.int32)


@triton.jit
def _load_block(row_ptr, idx, end, stride_sn):
    """Scores of one block as fp32 and their order-preserving int32 keys (non-negative scores
    sort like their bit patterns; -0.0 -> key 0), plus the mask ``idx < end``. A negative,
    infinite or NaN score is read as 0."""
    in_row = idx < end
    x = tl.load(row_ptr + idx.to(tl.int64) * stride_sn, mask=in_row, other=0.0).to(tl.float32)
    x = tl.where((x >= 0.0) & (x < float("inf")), x, 0.0)
    key = tl.maximum(x.to(tl.int32, bitcast=True), 0)
    return x, key, in_row


@triton.jit
def _resolve(
    cnt_in,
    sum_in,
    above_in,
    st_f_in,
    st_i_in,
    row,
    chunk_id,
    n_chunks,
    keep,
    mass,
    RESOLVE_FIRST: tl.constexpr,
    BEFORE: tl.constexpr,
    BINS: tl.constexpr,
    RB: tl.constexpr,
):
    """Reduce one pass's partial histograms of ``row`` (chunks in a fixed order, ``RB`` at a
    time) and pick that pass's digit for both searches.

    Mass search: the largest digit ``d`` with ``S(d) >= target``, ``S(d)`` the fp64 sum of the
    scores whose key is above the prefix or on it with a digit ``>= d`` (0 if none: possible
    only through fp64 rounding). Count search: the largest ``d`` with ``C(d) >= keep``. Returns
    the state after the pass: ``target``, ``S`` and count above the new mass prefix, the new
    mass prefix, the count above and the new count prefix, the number of keys on the digit of
    the mass search, both digits, and (``BEFORE``) the per-digit counts and the counts above
    the previous prefixes of the chunks before ``chunk_id``, for both searches (what a program
    needs to place its chunk; all loads are independent of each other and issued together)."""
    bins = tl.arange(0, BINS)
    chunk_offs = tl.arange(0, RB)
    cnt_s = tl.zeros([BINS], dtype=tl.int32)
    cnt_c = tl.zeros([BINS], dtype=tl.int32)
    sums = tl.zeros([BINS], dtype=tl.float64)
    before_s = tl.zeros([BINS], dtype=tl.int32)
    before_c = tl.zeros([BINS], dtype=tl.int32)
    above_s = tl.zeros((), dtype=tl.int32)
    above_c = tl.zeros((), dtype=tl.int32)
    for c0 in range(0, n_chunks, RB):
        chunk = c0 + chunk_offs
        ok = (chunk < n_chunks)[:, None]
        part = row * n_chunks + chunk.to(tl.int64)
        tile_s = tl.load(cnt_in + part[:, None] * (2 * BINS) + bins[None, :], ok, 0)
        tile_c = tl.load(cnt_in + part[:, None] * (2 * BINS) + BINS + bins[None, :], ok, 0)
        cnt_s += tl.sum(tile_s, 0)
        cnt_c += tl.sum(tile_c, 0)
        sums += tl.sum(tl.load(sum_in + part[:, None] * BINS + bins[None, :], ok, 0.0), 0)
        if BEFORE:
            earlier = chunk < chunk_id
            before_s += tl.sum(tl.where(earlier[:, None], tile_s, 0), 0)
            before_c += tl.sum(tl.where(earlier[:, None], tile_c, 0), 0)
            above_s += tl.sum(tl.load(above_in + part * 2, earlier, 0), 0)
            above_c += tl.sum(tl.load(above_in + part * 2 + 1, earlier, 0), 0)
    # suffix sums over the digits: row d of the triangle adds the bins >= d
    upper = bins[None, :] >= bins[:, None]
    suffix_s = tl.sum(tl.where(upper, sums[None, :], 0.0), 1)
    suffix_cs = tl.sum(tl.where(upper, cnt_s[None, :], 0), 1)
    suffix_cc = tl.sum(tl.where(upper, cnt_c[None, :], 0), 1)
    if RESOLVE_FIRST:
        total = tl.sum(tl.where(bins == 0, suffix_s, 0.0), 0)  # = S(0), bit for bit
        target = mass * total
        s_above = tl.zeros((), dtype=tl.float64)
        prefix_s = tl.zeros((), dtype=tl.int32)
        c_above_s = tl.zeros((), dtype=tl.int32)
        prefix_c = tl.zeros((), dtype=tl.int32)
        c_above_c = tl.zeros((), dtype=tl.int32)
    else:
        target = tl.load(st_f_in + row * 2)
        s_above = tl.load(st_f_in + row * 2 + 1)
        prefix_s = tl.load(st_i_in + row * 4)
        c_above_s = tl.load(st_i_in + row * 4 + 1)
        prefix_c = tl.load(st_i_in + row * 4 + 2)
        c_above_c = tl.load(st_i_in + row * 4 + 3)
    big_s = s_above + suffix_s
    big_cs = c_above_s + suffix_cs
    big_cc = c_above_c + suffix_cc
    d_s = tl.maximum(tl.max(tl.where(big_s >= target, bins, -1), 0), 0)
    d_c = tl.maximum(tl.max(tl.where(big_cc >= keep, bins, -1), 0), 0)
    next_s = bins == d_s + 1
    last_s = d_s == BINS - 1
    new_s_above = tl.sum(tl.where(next_s, big_s, 0.0), 0) + tl.where(last_s, s_above, 0.0)
    new_c_above_s = tl.sum(tl.where(next_s, big_cs, 0), 0) + tl.where(last_s, c_above_s, 0)
    new_c_above_c = tl.sum(tl.where(bins == d_c + 1, big_cc, 0), 0) + tl.where(
        d_c == BINS - 1, c_above_c, 0
    )
    ties_s = tl.sum(tl.where(bins == d_s, cnt_s, 0), 0)
    return (
        target,
        new_s_above,
        prefix_s * BINS + d_s,
        new_c_above_s,
        prefix_c * BINS + d_c,
        new_c_above_c,
        ties_s,
        d_s,
        d_c,
        before_s,
        before_c,
        above_s,
        above_c,
    )


@triton.jit
def _final(
    cnt_in,
    sum_in,
    above_in,
    st_f_in,
    st_i_in,
    row,
    chunk_id,
    n_chunks,
    keep,
    mass,
    RESOLVE_FIRST: tl.constexpr,
    BINS: tl.constexpr,
    RB: tl.constexpr,
):
    """Resolve the last pass and turn both thresholds into Stage I: every key ``> tau`` plus the
    first ``take`` keys ``== tau`` in index order; ``m`` tokens, ``rest = keep - m`` left for
    Stage II. Also the Stage-I tokens and the ties on ``tau`` in the chunks before
    ``chunk_id``: the keys above ``tau`` there plus ``min(take, ties before)`` (ties are taken
    in index order until ``take`` runs out)."""
    (
        target,
        s_above,
        tau_s,
        c_above_s,
        tau_c,
        c_above_c,
        ties_s,
        d_s,
        d_c,
        before_s,
        before_c,
        above_s,
        above_c,
    ) = _resolve(
        cnt_in,
        sum_in,
        above_in,
        st_f_in,
        st_i_in,
        row,
        chunk_id,
        n_chunks,
        keep,
        mass,
        RESOLVE_FIRST,
        True,
        BINS,
        RB,
    )
    has_target = target > 0
    # Ties at tau_s are taken in index order; the t-th of them is in Stage I iff the sorted
    # prefix sum before it, S(tau_s + 1) + (t - 1) * v, is still below the target (exactly the
    # reference's `cumsum < target` count). That prefix grows with t: bisection over t.
    tie_value = tau_s.to(tl.float32, bitcast=True).to(tl.float64)
    lo_t = tl.zeros((), dtype=tl.int32) + 1
    hi_t = tl.maximum(ties_s, 1)
    while lo_t < hi_t:
        mid_t = lo_t + (hi_t - lo_t + 1) // 2
        below = s_above + (mid_t - 1).to(tl.float64) * tie_value < target
        lo_t = tl.where(below, mid_t, lo_t)
        hi_t = tl.where(below, hi_t, mid_t - 1)
    m_mass = tl.where(has_target, c_above_s + lo_t, 0)
    capped = m_mass > keep
    tau = tl.where(capped, tau_c, tl.where(has_target, tau_s, _NO_KEY))
    take = tl.where(capped, keep - c_above_c, tl.where(has_target, lo_t, 0))
    m = tl.minimum(m_mass, keep)
    # the chunks before this one, from the last pass's counts of the search that set tau
    bins = tl.arange(0, BINS)
    digit = tl.where(capped, d_c, d_s)
    before = tl.where(capped, before_c, before_s)
    above = tl.where(capped, above_c, above_s) + tl.sum(tl.where(bins > digit, before, 0), 0)
    ties = tl.sum(tl.where(bins == digit, before, 0), 0)
    some = has_target | capped
    stage1_before = tl.where(some, above + tl.minimum(take, ties), 0)
    ties_before = tl.where(some, ties, 0)
    return tau, take, m, keep - m, stage1_before, ties_before


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _histogram(
    x, key, in_row, shift, prev_shift, prefix_s, prefix_c, FIRST: tl.constexpr, BINS: tl.constexpr
):
    """One block's digit histogram for both searches (counts; fp64 sums for the mass search) of
    the keys on each search's prefix, and the counts of keys above the prefixes."""
    bins = tl.arange(0, BINS)
    digit = (key >> shift) & (BINS - 1)
    if FIRST:
        on_s = in_row
        on_c = in_row
        above_s = tl.zeros((), dtype=tl.int32)
        above_c = tl.zeros((), dtype=tl.int32)
    else:
        high = key >> prev_shift
        on_s = in_row & (high == prefix_s)
        on_c = in_row & (high == prefix_c)
        above_s = tl.sum((in_row & (high > prefix_s)).to(tl.int32), 0)
        above_c = tl.sum((in_row & (high > prefix_c)).to(tl.int32), 0)
    hit = digit[:, None] == bins[None, :]
    hit_s = hit & on_s[:, None]
    cnt_s = tl.sum(hit_s.to(tl.int32), 0)
    cnt_c = tl.sum((hit & on_c[:, None]).to(tl.int32), 0)
    sums = tl.sum(tl.where(hit_s, x.to(tl.float64)[:, None], 0.0), 0)
    return cnt_s, cnt_c, sums, above_s, above_c


@triton.jit(do_not_specialize=["nv", "chunk_len", "n_chunks", "keep", "shift", "prev_shift"])
def _radix_hist_kernel(
    scores_ptr,
    stride_sb,
    stride_sn,
    nv,
    chunk_len,
    n_chunks,
    keep,
    mass: tl.float64,
    shift,
    prev_shift,
    cnt_out,  # int32 [B, chunks, 2, BINS]: this pass's counts (mass search, count search)
    sum_out,  # fp64 [B, chunks, BINS]: this pass's score sums (mass search)
    above_out,  # int32 [B, chunks, 2]: keys above the previous prefixes (both searches)
    cnt_in,  # the previous pass's partials (unused when FIRST)
    sum_in,
    st_f_in,  # state before the previous pass (unused when FIRST or RESOLVE_FIRST)
    st_i_in,
    st_f_out,  # state after the previous pass (program 0 writes it)
    st_i_out,
    FIRST: tl.constexpr,
    RESOLVE_FIRST: tl.constexpr,
    BINS: tl.constexpr,
    BLOCK: tl.constexpr,
    RB: tl.constexpr,
):
    chunk_id = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    row_ptr = scores_ptr + row * stride_sb
    start = chunk_id * chunk_len
    end = tl.minimum(start + chunk_len, nv)
    # the chunk's first block is loaded before the previous pass is resolved: the two memory
    # round trips overlap (on a GPU a chunk is one block)
    x0, key0, in_row0 = _load_block(row_ptr, start + offs, end, stride_sn)
    if FIRST:
        prefix_s = tl.zeros((), dtype=tl.int32)
        prefix_c = tl.zeros((), dtype=tl.int32)
    else:
        target, s_above, prefix_s, c_above_s, prefix_c, c_above_c, _, _, _, _, _, _, _ = _resolve(
            cnt_in,
            sum_in,
            cnt_in,
            st_f_in,
            st_i_in,
            row,
            chunk_id,
            n_chunks,
            keep,
            mass,
            RESOLVE_FIRST,
            False,
            BINS,
            RB,
        )
        first = chunk_id == 0
        tl.store(st_f_out + row * 2, target, mask=first)
        tl.store(st_f_out + row * 2 + 1, s_above, mask=first)
        tl.store(st_i_out + row * 4, prefix_s, mask=first)
        tl.store(st_i_out + row * 4 + 1, c_above_s, mask=first)
        tl.store(st_i_out + row * 4 + 2, prefix_c, mask=first)
        tl.store(st_i_out + row * 4 + 3, c_above_c, mask=first)

    cnt_s, cnt_c, sums, above_s, above_c = _histogram(
        x0, key0, in_row0, shift, prev_shift, prefix_s, prefix_c, FIRST, BINS
    )
    for s0 in range(start + BLOCK, end, BLOCK):
        x, key, in_row = _load_block(row_ptr, s0 + offs, end, stride_sn)
        more_s, more_c, more_sums, more_above_s, more_above_c = _histogram(
            x, key, in_row, shift, prev_shift, prefix_s, prefix_c, FIRST, BINS
        )
        cnt_s += more_s
        cnt_c += more_c
        sums += more_sums
        above_s += more_above_s
        above_c += more_above_c
    bins = tl.arange(0, BINS)
    part = row * n_chunks + chunk_id
    tl.store(cnt_out + part * (2 * BINS) + bins, cnt_s)
    tl.store(cnt_out + part * (2 * BINS) + BINS + bins, cnt_c)
    tl.store(sum_out + part * BINS + bins, sums)
    tl.store(above_out + part * 2, above_s)
    tl.store(above_out + part * 2 + 1, above_c)


@triton.jit(do_not_specialize=["nv", "chunk_len", "n_chunks", "keep"])
def _emit_flat_kernel(
    scores_ptr,
    stride_sb,
    stride_sn,
    out_ptr,  # int64 [B, keep], contiguous
    nv,
    chunk_len,
    n_chunks,
    keep,
    mass: tl.float64,
    cnt_in,  # the last pass's partials
    sum_in,
    above_in,
    st_f_in,  # state before the last pass
    st_i_in,
    RESOLVE_FIRST: tl.constexpr,
    BINS: tl.constexpr,
    BLOCK: tl.constexpr,
    RB: tl.constexpr,
):
    chunk_id = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    tau, take, m, rest, stage1_before, ties_before = _final(
        cnt_in,
        sum_in,
        above_in,
        st_f_in,
        st_i_in,
        row,
        chunk_id,
        n_chunks,
        keep,
        mass,
        RESOLVE_FIRST,
        BINS,
        RB,
    )
    start = chunk_id * chunk_len
    end = tl.minimum(start + chunk_len, nv)
    n_free = nv - m
    free_run = start - stage1_before  # free tokens before the chunk
    kept_run = stage1_before + _picks_before(free_run, rest, n_free)
    tie_run = ties_before
    row_ptr = scores_ptr + row * stride_sb
    out_row = out_ptr + row * keep
    offs = tl.arange(0, BLOCK)
    for s0 in range(start, end, BLOCK):
        idx = s0 + offs
        x, key, in_row = _load_block(row_ptr, idx, end, stride_sn)
        tie = (key == tau) & in_row
        tie_rank = tie_run + tl.cumsum(tie.to(tl.int32), 0)  # 1-based among ties
        stage1 = in_row & ((key > tau) | (tie & (tie_rank <= take)))
        free = in_row & (stage1 == 0)
        free_rank = free_run + tl.cumsum(free.to(tl.int32), 0) - 1
        kept = stage1 | (free & _spread_pick(free_rank, rest, n_free))
        slot = kept_run + tl.cumsum(kept.to(tl.int32), 0) - 1
        tl.store(out_row + slot, idx.to(tl.int64), mask=kept)
        tie_run += tl.sum(tie.to(tl.int32), 0)
        free_run += tl.sum(free.to(tl.int32), 0)
        kept_run += tl.sum(kept.to(tl.int32), 0)


@triton.jit(
    do_not_specialize=["nv", "chunk_len", "n_chunks", "keep", "n_frames", "frames_per_chunk"]
)
def _grid_flags_kernel(
    scores_ptr,
    stride_sb,
    stride_sn,
    flags_ptr,  # int8 [B, Nv] scratch: 1 Stage I, else 0
    frames_ptr,  # int32 [B, 2, T] scratch: chunk-local Stage-I count at frame ends; free count
    final_ptr,  # int32 [B, 4]: tau, take, m, rest (program 0 writes it)
    nv,
    chunk_len,
    n_chunks,
    keep,
    mass: tl.float64,
    n_frames,
    frame_size,
    frames_per_chunk,
    cnt_in,
    sum_in,
    above_in,
    st_f_in,
    st_i_in,
    RESOLVE_FIRST: tl.constexpr,
    BINS: tl.constexpr,
    BLOCK: tl.constexpr,
    RB: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    chunk_id = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    tau, take, m, rest, _, tie_run = _final(
        cnt_in,
        sum_in,
        above_in,
        st_f_in,
        st_i_in,
        row,
        chunk_id,
        n_chunks,
        keep,
        mass,
        RESOLVE_FIRST,
        BINS,
        RB,
    )
    first = chunk_id == 0
    tl.store(final_ptr + row * 4, tau, mask=first)
    tl.store(final_ptr + row * 4 + 1, take, mask=first)
    tl.store(final_ptr + row * 4 + 2, m, mask=first)
    tl.store(final_ptr + row * 4 + 3, rest, mask=first)
    start = chunk_id * chunk_len
    end = tl.minimum(start + chunk_len, nv)
    row_ptr = scores_ptr + row * stride_sb
    frames_row = frames_ptr + row * 2 * n_frames
    offs = tl.arange(0, BLOCK)
    kept_run = tl.zeros((), dtype=tl.int32)  # Stage-I count since the chunk's first frame
    for s0 in range(start, end, BLOCK):
        idx = s0 + offs
        x, key, in_row = _load_block(row_ptr, idx, end, stride_sn)
        tie = (key == tau) & in_row
        tie_rank = tie_run + tl.cumsum(tie.to(tl.int32), 0)
        stage1 = in_row & ((key > tau) | (tie & (tie_rank <= take)))
        tie_run += tl.sum(tie.to(tl.int32), 0)
        tl.store(flags_ptr + row * nv + idx, stage1.to(tl.int8), mask=in_row)
        stage1_upto = kept_run + tl.cumsum(stage1.to(tl.int32), 0)
        frame_end = in_row & ((idx + 1) % frame_size == 0)
        tl.store(frames_row + idx // frame_size, stage1_upto, mask=frame_end)
        kept_run += tl.sum(stage1.to(tl.int32), 0)
    tl.debug_barrier()  # the frame-end counts above are read by other threads
    f0 = chunk_id * frames_per_chunk
    f1 = tl.minimum(f0 + frames_per_chunk, n_frames)
    toffs = tl.arange(0, BLOCK_T)
    for t0 in range(f0, f1, BLOCK_T):
        t = t0 + toffs
        in_chunk = t < f1
        upto = tl.load(frames_row + t, mask=in_chunk, other=0)
        before = tl.load(frames_row + t - 1, mask=in_chunk & (t > f0), other=0)
        tl.store(frames_row + n_frames + t, frame_size - (upto - before), mask=in_chunk)


@triton.jit(do_not_specialize=["nv", "keep", "n_frames", "frames_per_chunk"])
def _grid_walk_kernel(
    out_ptr,  # int64 [B, keep], contiguous
    flags_ptr,  # int8 [B, Nv]: 1 Stage I, 0 free; Stage II marks its picks 2
    frames_ptr,  # int32 [B, 2, T]: slot 1 free counts; slot 0 reused for this chunk's quotas
    final_ptr,  # int32 [B, 4]: tau, take, m, rest
    perm_ptr,  # int32 [H * W]: frame positions in spatial-priority order
    nv,
    keep,
    n_frames,
    frame_size,
    frames_per_chunk,
    BLOCK: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    chunk_id = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    rest = tl.load(final_ptr + row * 4 + 3)
    frames_row = frames_ptr + row * 2 * n_frames
    free_row = frames_row + n_frames
    toffs = tl.arange(0, BLOCK_T)
    # The first BLOCK_T frames stay in registers (all of them unless T > BLOCK_T).
    head_ok = toffs < n_frames
    free_head = tl.load(free_row + toffs, mask=head_ok, other=0)

    # water level: largest L in [0, max free] with sum_t min(free_t, L) <= rest
    hi_l = tl.max(free_head, 0)
    for t0 in range(BLOCK_T, n_frames, BLOCK_T):
        t = t0 + toffs
        hi_l = tl.maximum(hi_l, tl.max(tl.load(free_row + t, mask=t < n_frames, other=0), 0))
    lo_l = tl.zeros((), dtype=tl.int32)
    while lo_l < hi_l:
        mid_l = lo_l + (hi_l - lo_l + 1) // 2
        filled = tl.sum(tl.minimum(free_head, mid_l).to(tl.int64), 0)
        for t0 in range(BLOCK_T, n_frames, BLOCK_T):
            t = t0 + toffs
            free_t = tl.load(free_row + t, mask=t < n_frames, other=0)
            filled += tl.sum(tl.minimum(free_t, mid_l).to(tl.int64), 0)
        fits = filled <= rest
        lo_l = tl.where(fits, mid_l, lo_l)
        hi_l = tl.where(fits, hi_l, mid_l - 1)
    base = tl.sum(tl.minimum(free_head, lo_l).to(tl.int64), 0)
    n_room = tl.sum((head_ok & (free_head > lo_l)).to(tl.int32), 0)
    for t0 in range(BLOCK_T, n_frames, BLOCK_T):
        t = t0 + toffs
        in_frames = t < n_frames
        free_t = tl.load(free_row + t, mask=in_frames, other=0)
        base += tl.sum(tl.minimum(free_t, lo_l).to(tl.int64), 0)
        n_room += tl.sum((in_frames & (free_t > lo_l)).to(tl.int32), 0)
    extra = rest - base

    # quotas: min(free, L) + one extra slot for a spread of the frames with room; the kept
    # tokens of the frames before this chunk give its first output slot
    f0 = chunk_id * frames_per_chunk
    f1 = tl.minimum(f0 + frames_per_chunk, n_frames)
    room_run = tl.zeros((), dtype=tl.int32)
    kept_before = tl.zeros((), dtype=tl.int32)
    for t0 in range(0, f1, BLOCK_T):
        t = t0 + toffs
        in_frames = t < f1
        free_t = tl.load(free_row + t, mask=in_frames, other=0)
        room = in_frames & (free_t > lo_l)
        room_rank = room_run + tl.cumsum(room.to(tl.int32), 0) - 1
        bonus = room & _spread_pick(room_rank, extra, n_room)
        quota = tl.minimum(free_t, lo_l) + bonus.to(tl.int32)
        before = in_frames & (t < f0)
        kept_before += tl.sum(tl.where(before, frame_size - free_t + quota, 0), 0)
        tl.store(frames_row + t, quota, mask=in_frames & (t >= f0))
        room_run += tl.sum(room.to(tl.int32), 0)
    tl.debug_barrier()

    # each frame takes its quota of free tokens in spatial-priority order; tiles of BLOCK_F
    # frames x BLOCK_P priority ranks, a running free count per frame
    foffs = tl.arange(0, BLOCK_F)
    poffs = tl.arange(0, BLOCK_P)
    flags_row = flags_ptr + row * nv
    for ff in range(f0, f1, BLOCK_F):
        f = ff + foffs
        in_frames = f < f1
        quota = tl.load(frames_row + f, mask=in_frames, other=0)
        free_seen = tl.zeros((BLOCK_F,), dtype=tl.int32)
        for p0 in range(0, frame_size, BLOCK_P):
            p = p0 + poffs
            in_frame = p < frame_size
            pos = tl.load(perm_ptr + p, mask=in_frame, other=0)
            tok = f[:, None] * frame_size + pos[None, :]
            in_tile = in_frames[:, None] & in_frame[None, :]
            flag = tl.load(flags_row + tok, mask=in_tile, other=1)
            free = in_tile & (flag == 0)
            free_upto = free_seen[:, None] + tl.cumsum(free.to(tl.int32), 1)
            take_tile = free & (free_upto <= quota[:, None])
            tl.store(flags_row + tok, tl.full((BLOCK_F, BLOCK_P), 2, tl.int8), mask=take_tile)
            free_seen += tl.sum(free.to(tl.int32), 1)
    tl.debug_barrier()

    # compaction of the chunk's tokens in index order
    out_row = out_ptr + row * keep
    offs = tl.arange(0, BLOCK)
    kept_run = kept_before
    end = f1 * frame_size
    for s0 in range(f0 * frame_size, end, BLOCK):
        idx = s0 + offs
        in_row = idx < end
        flag = tl.load(flags_row + idx, mask=in_row, other=0)
        kept = in_row & (flag != 0)
        slot = kept_run + tl.cumsum(kept.to(tl.int32), 0) - 1
        tl.store(out_row + slot, idx.to(tl.int64), mask=kept)
        kept_run += tl.sum(kept.to(tl.int32), 0)


@triton.jit(do_not_specialize=["keep", "n_row_blocks"])
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


def radix_passes(radix_bits: int) -> list[tuple[int, int]]:
    """``(shift, prev_shift)`` of each radix pass: digits of ``radix_bits`` bits from the top
    of the 31-bit keys down (the first digit may reach past bit 30: those bins stay empty)."""
    n_passes = -(-KEY_BITS // radix_bits)
    shifts = [(n_passes - 1 - p) * radix_bits for p in range(n_passes)]
    return [(s, shifts[p - 1] if p else 32) for p, s in enumerate(shifts)]


def _select_config(
    nv: int,
    grid: tuple[int, int, int] | None,
    device: torch.device,
    *,
    block: int | None = None,
    chunk: int | None = None,
    radix_bits: int | None = None,
) -> dict:
    """Chunking and tile sizes (a fixed heuristic of the shapes only).

    GPU: chunks of 512 tokens (128 programs per row at 64k, about one wave over 132 SMs), one
    512-token block per chunk (no loop), 4-bit digits (8 radix passes, 16 bins), 8 warps. With a
    frame grid a chunk is ``max(1, 512 // (H * W))`` whole frames. Interpreter: chunks of up to
    512 tokens in blocks of 128 (each op costs a NumPy call whatever its size). ``block`` sets
    both the block and the chunk unless ``chunk`` is given; tests use small ones so many chunks
    and blocks meet the cross-chunk carries.
    """
    on_gpu = gpu_config(device)
    radix_bits = 4 if radix_bits is None else radix_bits
    if not 1 <= radix_bits <= 8:  # the suffix sums use a [bins, bins] triangle
        raise ValueError(f"radix_bits must be in [1, 8], got {radix_bits}")
    if block is None:
        block = 512 if on_gpu else 128
        block = max(16, min(block, triton.next_power_of_2(max(nv, 1))))
        default_chunk = 512
    else:
        default_chunk = block
    chunk = default_chunk if chunk is None else chunk
    if grid is None:
        frames_per_chunk = 1
        chunk_len = chunk
        n_frames = frame_size = 1
    else:
        n_frames, height, width = grid
        frame_size = height * width
        frames_per_chunk = max(1, chunk // frame_size)
        chunk_len = frames_per_chunk * frame_size
    n_chunks = max(1, triton.cdiv(nv, chunk_len))
    # GPU: one RB and BLOCK_T for every shape (fewer compilations); masks cover the rest
    rb = 128 if on_gpu else min(triton.next_power_of_2(n_chunks), 128)
    block_t = 1024 if on_gpu else min(triton.next_power_of_2(n_frames), 1024)
    block_p = min(triton.next_power_of_2(frame_size), block)
    block_f = max(1, min(block // block_p, triton.next_power_of_2(frames_per_chunk)))
    return {
        "radix_bits": radix_bits,
        "chunk_len": chunk_len,
        "n_chunks": n_chunks,
        "frames_per_chunk": frames_per_chunk,
        "BLOCK": block,
        "RB": rb,
        "BLOCK_T": block_t,
        "BLOCK_F": block_f,
        "BLOCK_P": block_p,
        "num_warps": 8 if on_gpu and block >= 512 else 4,
        # the grid walk: with 8 warps ptxas 12.8 / 12.9 (Triton 3.7, 3.8) cap it at 64
        # registers and it spills; with 4 it takes 80-116 (docs/kernels.md)
        "walk_warps": 4,
    }


def _launch_select(
    scores: torch.Tensor,
    keep: int,
    mass: float,
    grid: tuple[int, int, int] | None,
    *,
    block: int | None = None,
    chunk: int | None = None,
    radix_bits: int | None = None,
) -> torch.Tensor:
    """Run the selection kernels on validated inputs; returns int64 ``[B, keep]``. ``block``,
    ``chunk`` and ``radix_bits`` override the configuration (for tests)."""
    nb, nv = scores.shape
    device = scores.device
    out = torch.empty(nb, keep, dtype=torch.int64, device=device)
    if nb == 0 or keep == 0:
        return out
    check_compiled(_radix_hist_kernel, device)
    cfg = _select_config(nv, grid, device, block=block, chunk=chunk, radix_bits=radix_bits)
    bins = 1 << cfg["radix_bits"]
    passes = radix_passes(cfg["radix_bits"])
    n_chunks, chunk_len = cfg["n_chunks"], cfg["chunk_len"]
    n_passes = len(passes)
    part_cnt = torch.empty(n_passes, nb, n_chunks, 2, bins, dtype=torch.int32, device=device)
    part_sum = torch.empty(n_passes, nb, n_chunks, bins, dtype=torch.float64, device=device)
    part_above = torch.empty(n_passes, nb, n_chunks, 2, dtype=torch.int32, device=device)
    st_f = torch.empty(n_passes, nb, 2, dtype=torch.float64, device=device)
    st_i = torch.empty(n_passes, nb, 4, dtype=torch.int32, device=device)
    common = dict(BINS=bins, BLOCK=cfg["BLOCK"], RB=cfg["RB"], num_warps=cfg["num_warps"])
    rows = (n_chunks, nb)
    with device_guard(device):
        for p, (shift, prev_shift) in enumerate(passes):
            prev, before = max(p - 1, 0), max(p - 2, 0)
            _radix_hist_kernel[rows](
                scores,
                scores.stride(0),
                scores.stride(1),
                nv,
                chunk_len,
                n_chunks,
                keep,
                float(mass),
                shift,
                prev_shift,
                part_cnt[p],
                part_sum[p],
                part_above[p],
                part_cnt[prev],
                part_sum[prev],
                st_f[before],
                st_i[before],
                st_f[prev],
                st_i[prev],
                FIRST=p == 0,
                RESOLVE_FIRST=p == 1,
                **common,
            )
        last, before = n_passes - 1, max(n_passes - 2, 0)
        resolve = (
            part_cnt[last],
            part_sum[last],
            part_above[last],
            st_f[before],
            st_i[before],
        )
        if grid is None:
            _emit_flat_kernel[rows](
                scores,
                scores.stride(0),
                scores.stride(1),
                out,
                nv,
                chunk_len,
                n_chunks,
                keep,
                float(mass),
                *resolve,
                RESOLVE_FIRST=n_passes == 1,
                **common,
            )
            return out
        n_frames, height, width = grid
        frame_size = height * width
        flags = torch.empty(nb, nv, dtype=torch.int8, device=device)
        frames = torch.empty(nb, 2, n_frames, dtype=torch.int32, device=device)
        final = torch.empty(nb, 4, dtype=torch.int32, device=device)
        _grid_flags_kernel[rows](
            scores,
            scores.stride(0),
            scores.stride(1),
            flags,
            frames,
            final,
            nv,
            chunk_len,
            n_chunks,
            keep,
            float(mass),
            n_frames,
            frame_size,
            cfg["frames_per_chunk"],
            *resolve,
            RESOLVE_FIRST=n_passes == 1,
            BLOCK_T=cfg["BLOCK_T"],
            **common,
        )
        _grid_walk_kernel[rows](
            out,
            flags,
            frames,
            final,
            _priority_order(height, width, device),
            nv,
            keep,
            n_frames,
            frame_size,
            cfg["frames_per_chunk"],
            BLOCK=cfg["BLOCK"],
            BLOCK_T=cfg["BLOCK_T"],
            BLOCK_F=cfg["BLOCK_F"],
            BLOCK_P=cfg["BLOCK_P"],
            num_warps=cfg["walk_warps"],
        )
    return out


def _launch_gather(features: torch.Tensor, indices: torch.Tensor, out: torch.Tensor) -> None:
    """``out[b, k, :] = features[b, indices[b, k], :]`` (``indices`` int64 contiguous)."""
    nb, keep = indices.shape
    n_chan = features.shape[2]
    if nb == 0 or keep == 0 or n_chan == 0:
        return
    check_compiled(_gather_rows_kernel, features.device)
    on_gpu = gpu_config(features.device)
    block_c = min(triton.next_power_of_2(n_chan), 256 if on_gpu else 128)
    block_k = 16
    n_row_blocks = triton.cdiv(keep, block_k)
    with device_guard(features.device):
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
    propagates NaN) read on the host: always for CPU tensors (no synchronisation), for CUDA
    tensors only with ``SPECVLM_KERNELS_DEBUG=1`` (one device sync; not while capturing a CUDA
    graph). Unchecked, the kernels read such scores as 0."""
    if scores.numel() == 0 or not value_checks(scores.device):
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
