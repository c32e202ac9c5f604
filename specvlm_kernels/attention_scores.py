"""Text-to-video attention mass per video token, for one prefill layer, without ``[Lq, Lk]``.

Public entry point: :func:`video_attention_scores`. Semantics are exactly those of
:func:`specvlm_kernels.reference.video_attention_scores_ref` (plus accumulation into ``out``);
the design is described in ``docs/kernels/attention_scores.md``.

Two or three launches, no atomics, fixed reduction orders (bitwise reproducible for a given
shape, dtype and device), no host synchronisation:

1. ``_row_lse_kernel``, grid ``(cdiv(G * Lq, BLOCK_M), splits, B * Hk)``: the base-2
   log-sum-exp of every query row's causal score row. The ``G = Hq / Hk`` query heads that share
   a key head are packed with the rows into one tile (row ``r`` of the tile is query row
   ``r // G`` of query head ``kh * G + r % G``), so each key block is read once per key head and
   row tile. Key blocks left of the tile's first query position need no causal mask. At small
   ``Lq`` the keys are split over ``splits`` programs (split-K, the count chosen by waves over
   the SMs); each writes a partial running max and sum of exponentials.
2. ``_lse_merge_kernel`` (only with ``splits > 1``): combines the partials of each row in a
   fixed split order into its log-sum-exp.
3. ``_video_mass_kernel``, grid ``(cdiv(Nv, BLOCK_N), B)``: one program owns ``BLOCK_N`` video
   keys of one batch row. It loops over the key heads and, for each, over the packed row
   tiles that can see the block, recomputes the scores, turns them into probabilities with the
   row's log-sum-exp and sums them over rows and heads in fp32 registers. It writes (or adds
   into ``out``) the mean over the ``Hq * Lq`` (head, row) pairs.

Extra memory: the fp32 log-sum-exp, ``4 * B * Hq * Lq`` bytes, plus ``8 * B * Hq * Lq *
splits`` bytes of partials when the keys are split.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from specvlm_kernels._checks import (
    FLOAT_DTYPES,
    check_int,
    check_q_k,
    check_same_device,
    check_same_dtype,
    check_scale,
    check_tensor,
)
from specvlm_kernels._dispatch import (
    REFERENCE,
    backend_for,
    check_compiled,
    device_guard,
    gpu_config,
    sm_count,
    waves_split,
)
from specvlm_kernels.reference import video_attention_scores_ref

__all__ = ["video_attention_scores"]

_LOG2E = 1.4426950408889634


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _load_q_tile(
    q_ptr,
    b,
    kh,
    rows,
    group,
    q_len,
    head_dim,
    stride_qb,
    stride_qh,
    stride_ql,
    stride_qd,
    DOT_F32: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Rows ``rows`` of the packed (query row, head of the group) tile of key head ``kh``."""
    row_valid = rows < group * q_len
    qi = rows // group
    qhead = kh * group + (rows % group).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    ptrs = (
        q_ptr
        + b * stride_qb
        + qhead[:, None] * stride_qh
        + qi.to(tl.int64)[:, None] * stride_ql
        + offs_d[None, :] * stride_qd
    )
    q = tl.load(ptrs, mask=row_valid[:, None] & (offs_d < head_dim)[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    return q, row_valid, qi, qhead


@triton.jit
def _load_k_tile(
    k_base,
    pos,
    valid,
    head_dim,
    stride_kl,
    stride_kd,
    DOT_F32: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    offs_d = tl.arange(0, BLOCK_D)
    ptrs = k_base + pos.to(tl.int64)[:, None] * stride_kl + offs_d[None, :] * stride_kd
    k = tl.load(ptrs, mask=valid[:, None] & (offs_d < head_dim)[None, :], other=0.0)
    if DOT_F32:
        k = k.to(tl.float32)
    return k


@triton.jit
def _lse_step(
    q,
    m_i,
    l_i,
    k_base,
    start,
    q_pos,
    key_len,
    head_dim,
    qk_scale,
    stride_kl,
    stride_kd,
    CAUSAL: tl.constexpr,
    DOT_F32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Online max / sum-of-exp2 update over the keys ``start .. start + BLOCK_N``."""
    pos = start + tl.arange(0, BLOCK_N)
    in_range = pos < key_len
    k = _load_k_tile(k_base, pos, in_range, head_dim, stride_kl, stride_kd, DOT_F32, BLOCK_D)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # log2 domain
    visible = in_range[None, :]
    if CAUSAL:
        visible = visible & (pos[None, :] <= q_pos[:, None])
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that saw nothing yet
    l_i = l_i * tl.math.exp2(m_i - m_shift) + tl.sum(tl.math.exp2(s - m_shift[:, None]), axis=1)
    return m_new, l_i


@triton.jit(do_not_specialize=["q_len", "q_offset", "num_splits", "blocks_per_split"])
def _row_lse_kernel(
    q_ptr,
    k_ptr,
    lse_ptr,  # fp32 [B, Hq, Lq] (one split)
    part_ptr,  # fp32 [B, Hq, Lq, splits, 2]: running max and sum of exp2 per split (splits > 1)
    qk_scale,
    num_kv_heads,
    group,
    q_len,
    q_offset,
    head_dim,
    num_splits,
    blocks_per_split,
    stride_qb,
    stride_qh,
    stride_ql,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kl,
    stride_kd,
    SPLIT: tl.constexpr,
    DOT_F32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = (pid_bh // num_kv_heads).to(tl.int64)
    kh = (pid_bh % num_kv_heads).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q, row_valid, qi, qhead = _load_q_tile(
        q_ptr,
        b,
        kh,
        rows,
        group,
        q_len,
        head_dim,
        stride_qb,
        stride_qh,
        stride_ql,
        stride_qd,
        DOT_F32,
        BLOCK_D,
    )
    q_pos = q_offset + qi  # key position of each row: it sees keys 0 .. q_pos

    first_qi = (pid_m * BLOCK_M) // group
    last_qi = tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // group, q_len - 1)
    key_len = q_offset + last_qi + 1  # keys any row of the tile sees
    # Blocks wholly left of the tile's first query position are visible to every row.
    full_end = ((q_offset + first_qi + 1) // BLOCK_N) * BLOCK_N
    # This split's keys: [lo, hi), whole blocks (split 0 always holds key 0).
    lo = pid_s * blocks_per_split * BLOCK_N
    hi = tl.minimum(lo + blocks_per_split * BLOCK_N, key_len)
    mid = tl.maximum(tl.minimum(full_end, hi), lo)
    k_base = k_ptr + b * stride_kb + kh * stride_kh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start in range(lo, mid, BLOCK_N):
        m_i, l_i = _lse_step(
            q,
            m_i,
            l_i,
            k_base,
            start,
            q_pos,
            key_len,
            head_dim,
            qk_scale,
            stride_kl,
            stride_kd,
            False,
            DOT_F32,
            DOT_PRECISION,
            BLOCK_N,
            BLOCK_D,
        )
    for start in range(mid, hi, BLOCK_N):
        m_i, l_i = _lse_step(
            q,
            m_i,
            l_i,
            k_base,
            start,
            q_pos,
            key_len,
            head_dim,
            qk_scale,
            stride_kl,
            stride_kd,
            True,
            DOT_F32,
            DOT_PRECISION,
            BLOCK_N,
            BLOCK_D,
        )
    flat = (b * (num_kv_heads * group) + qhead) * q_len + qi
    if SPLIT:
        # an empty split (or a row that saw nothing in it) leaves m = -inf, l = 0
        part = (flat * num_splits + pid_s) * 2
        tl.store(part_ptr + part, m_i, mask=row_valid)
        tl.store(part_ptr + part + 1, l_i, mask=row_valid)
    else:
        # Every valid row sees at least key 0, so l_i > 0 there.
        lse = m_i + tl.math.log2(tl.where(row_valid, l_i, 1.0))
        tl.store(lse_ptr + flat, lse, mask=row_valid)


@triton.jit(do_not_specialize=["total_rows", "num_splits"])
def _lse_merge_kernel(
    part_ptr,  # fp32 [R, splits, 2]
    lse_ptr,  # fp32 [R]
    total_rows,
    num_splits,
    BLOCK_R: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_valid = rows < total_rows
    splits = tl.arange(0, BLOCK_S)
    ok = row_valid[:, None] & (splits < num_splits)[None, :]
    part = (rows.to(tl.int64)[:, None] * num_splits + splits[None, :]) * 2
    m = tl.load(part_ptr + part, mask=ok, other=float("-inf"))
    s = tl.load(part_ptr + part + 1, mask=ok, other=0.0)
    m_max = tl.max(m, 1)
    m_shift = tl.where(m_max == float("-inf"), 0.0, m_max)
    total = tl.sum(s * tl.math.exp2(m - m_shift[:, None]), 1)  # fixed order over the splits
    lse = m_max + tl.math.log2(tl.where(row_valid, total, 1.0))
    tl.store(lse_ptr + rows, lse, mask=row_valid)


@triton.jit(do_not_specialize=["q_len", "q_offset", "video_start", "num_video"])
def _video_mass_kernel(
    q_ptr,
    k_ptr,
    lse_ptr,
    out_ptr,
    qk_scale,
    inv_count,
    num_kv_heads,
    group,
    q_len,
    q_offset,
    video_start,
    num_video,
    head_dim,
    stride_qb,
    stride_qh,
    stride_ql,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kl,
    stride_kd,
    stride_ob,
    stride_on,
    ACCUMULATE: tl.constexpr,
    DOT_F32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_v = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # index within the video span
    key_valid = offs_v < num_video
    kpos = video_start + offs_v
    m_rows = group * q_len
    # Only query rows at positions >= the block's first key can see any of it.
    first_qi = tl.maximum(video_start + pid_n * BLOCK_N - q_offset, 0)
    row_start = ((first_qi * group) // BLOCK_M) * BLOCK_M

    total = tl.zeros([BLOCK_N], dtype=tl.float32)
    for kh in range(0, num_kv_heads):
        kh64 = b * 0 + kh  # int64 in compiled code and under the interpreter
        k_base = k_ptr + b * stride_kb + kh64 * stride_kh
        k = _load_k_tile(k_base, kpos, key_valid, head_dim, stride_kl, stride_kd, DOT_F32, BLOCK_D)
        for r0 in range(row_start, m_rows, BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M)
            q, row_valid, qi, qhead = _load_q_tile(
                q_ptr,
                b,
                kh64,
                rows,
                group,
                q_len,
                head_dim,
                stride_qb,
                stride_qh,
                stride_ql,
                stride_qd,
                DOT_F32,
                BLOCK_D,
            )
            lse = tl.load(
                lse_ptr + (b * (num_kv_heads * group) + qhead) * q_len + qi,
                mask=row_valid,
                other=0.0,
            )
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
            visible = (
                row_valid[:, None]
                & key_valid[None, :]
                & (kpos[None, :] <= (q_offset + qi)[:, None])
            )
            p = tl.where(visible, tl.math.exp2(s - lse[:, None]), 0.0)
            total += tl.sum(p, axis=0)
    total = total * inv_count
    out_ptrs = out_ptr + b * stride_ob + offs_v.to(tl.int64) * stride_on
    if ACCUMULATE:
        total += tl.load(out_ptrs, mask=key_valid, other=0.0)
    tl.store(out_ptrs, total, mask=key_valid)


# --------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------
def _config(q: torch.Tensor, head_dim: int, m_rows: int) -> tuple[dict, dict]:
    """Tile sizes of the row-LSE and the column-sum kernels for ``m_rows = G * Lq`` packed rows
    per KV head (a fixed heuristic: autotuning does not run under the interpreter).

    GPU, fp16/bf16, D <= 128: with at least 128 packed rows, 128-row x 64-key tiles and 8 warps
    for both passes (the row pass re-reads K from L2 once per row tile and the column pass Q
    once per key block: large tiles halve that traffic); with fewer rows, 64 x 64 with 4 warps
    for the row pass and 64 x 32 with 4 warps for the column pass (it holds a K and a Q tile at
    once: 64 x 64 spilled on sm_80). D > 128: 32 x 64, 8 warps. GPU, fp32: the exact-fp32
    ("ieee") dots run on FMA units and hold both operands in registers: 16 x 32 tiles with 8
    warps for the row pass (32 x 64 with 4 warps spilled 11.7 KB per thread on sm_90), 16 x 16
    with 8 warps for the column pass (16 x 32 spilled). Every GPU configuration compiles for
    sm_80 and sm_90 without spills at the benches' shapes (``bench/compile_check.py``).
    Interpreter: 16 x 16 tiles, so the short test sequences span several blocks and row tiles.
    """
    block_d = max(16, triton.next_power_of_2(head_dim))

    def tiles(m, n, warps):
        return {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_D": block_d, "num_warps": warps}

    if not gpu_config(q.device):
        return tiles(16, 16, 4), tiles(16, 16, 4)
    if q.element_size() > 2:
        return tiles(16, 32, 8), tiles(16, 16, 8)
    if block_d > 128:
        return tiles(32, 64, 8), tiles(32, 64, 8)
    if m_rows >= 128:
        return tiles(128, 64, 8), tiles(128, 64, 8)
    return tiles(64, 64, 4), tiles(64, 32, 4)


MAX_SPLITS = 64


def _num_splits(m_tiles: int, b: int, hk: int, lk: int, block_n: int, device) -> int:
    """Key splits of the row-LSE pass: by waves over the SMs
    (:func:`specvlm_kernels._dispatch.waves_split`), at most :data:`MAX_SPLITS`, and at least
    4 key blocks per split."""
    n_blocks = triton.cdiv(lk, block_n)
    max_splits = min(MAX_SPLITS, max(1, n_blocks // 4))
    return waves_split(m_tiles * b * hk, n_blocks, max_splits, sm_count(device))


def _video_attention_scores_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    video_start: int,
    video_end: int,
    scale: float,
    q_offset: int,
    out: torch.Tensor,
    *,
    accumulate: bool,
    block_m: int | None = None,
    block_n: int | None = None,
    num_splits: int | None = None,
    lse: torch.Tensor | None = None,
    partials: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the kernels on validated inputs.

    ``accumulate=False`` overwrites ``out`` (so tests can pre-fill it with NaN);
    ``block_m``/``block_n``/``num_splits`` override the configuration; ``lse`` (contiguous fp32
    ``[B, Hq, Lq]``) and ``partials`` (contiguous fp32 ``[B, Hq, Lq, splits, 2]``) supply the
    scratch buffers: all for tests.
    """
    b, hq, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    num_video = video_end - video_start
    if b == 0 or num_video == 0:
        return out
    check_compiled(_row_lse_kernel, q.device)
    group = hq // hk
    row_cfg, mass_cfg = _config(q, d, group * lq)
    for cfg in (row_cfg, mass_cfg):
        if block_m is not None:
            cfg["BLOCK_M"] = block_m
        if block_n is not None:
            cfg["BLOCK_N"] = block_n
    m_tiles = triton.cdiv(group * lq, row_cfg["BLOCK_M"])
    if num_splits is None:
        num_splits = _num_splits(m_tiles, b, hk, lk, row_cfg["BLOCK_N"], q.device)
    blocks_per_split = triton.cdiv(triton.cdiv(lk, row_cfg["BLOCK_N"]), num_splits)
    if lse is None:
        lse = torch.empty((b, hq, lq), dtype=torch.float32, device=q.device)
    split = num_splits > 1
    if split and partials is None:
        partials = torch.empty((b, hq, lq, num_splits, 2), dtype=torch.float32, device=q.device)
    elif not split:
        partials = lse  # never written
    # Interpreter (CPU): fp16/bf16 dots are unreliable there, so upcast and do them in fp32.
    dot_f32 = q.dtype == torch.float32 or not gpu_config(q.device)
    dot_precision = "ieee" if dot_f32 else "tf32"  # "tf32" is ignored for 16-bit operands
    qk_scale = scale * _LOG2E
    flags = dict(DOT_F32=dot_f32, DOT_PRECISION=dot_precision)

    with device_guard(q.device):
        _row_lse_kernel[(m_tiles, num_splits, b * hk)](
            q,
            k,
            lse,
            partials,
            qk_scale,
            hk,
            group,
            lq,
            q_offset,
            d,
            num_splits,
            blocks_per_split,
            *q.stride(),
            *k.stride(),
            SPLIT=split,
            **flags,
            **row_cfg,
        )
        if split:
            rows = b * hq * lq
            # one configuration for every split count up to MAX_SPLITS (no recompilation)
            block_s = max(MAX_SPLITS, triton.next_power_of_2(num_splits))
            block_r = max(1, 1024 // block_s)
            _lse_merge_kernel[(triton.cdiv(rows, block_r),)](
                partials, lse, rows, num_splits, BLOCK_R=block_r, BLOCK_S=block_s, num_warps=4
            )
        _video_mass_kernel[(triton.cdiv(num_video, mass_cfg["BLOCK_N"]), b)](
            q,
            k,
            lse,
            out,
            qk_scale,
            1.0 / (hq * lq),
            hk,
            group,
            lq,
            q_offset,
            video_start,
            num_video,
            d,
            *q.stride(),
            *k.stride(),
            *out.stride(),
            ACCUMULATE=accumulate,
            **flags,
            **mass_cfg,
        )
    return out


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------
def _check_inputs(q, k, video_start, video_end, q_offset, out) -> tuple[int, int, int]:
    check_tensor("q", q, 4, FLOAT_DTYPES)
    check_tensor("k", k, 4, FLOAT_DTYPES)
    check_same_dtype(q=q, k=k)
    check_same_device(q=q, k=k)
    check_q_k(q, k, "Lk")
    b, lq, lk = q.shape[0], q.shape[2], k.shape[2]
    if lq < 1:
        raise ValueError(f"q must have at least one query row (Lq >= 1), got {tuple(q.shape)}")
    if lq > lk:
        raise ValueError(f"q has Lq={lq} rows but k only Lk={lk} keys; need Lq <= Lk")
    video_start = check_int("video_start", video_start, 0, lk)
    video_end = check_int("video_end", video_end, video_start, lk)
    q_offset = lk - lq if q_offset is None else check_int("q_offset", q_offset, 0, lk - lq)
    if out is not None:
        check_tensor("out", out, 2, (torch.float32,))
        if tuple(out.shape) != (b, video_end - video_start):
            raise ValueError(
                f"out must have shape [B, video_end - video_start] = "
                f"{[b, video_end - video_start]}, got {list(out.shape)}"
            )
        if out.device != q.device:
            raise ValueError(
                f"out is on {out.device} but q is on {q.device}; all tensors must be on one device"
            )
    return video_start, video_end, q_offset


def video_attention_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    video_start: int,
    video_end: int,
    *,
    scale: float | None = None,
    q_offset: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean softmax attention that the query rows pay to each video key, for one layer.

    Args:
        q: ``[B, Hq, Lq, D]`` post-RoPE queries of the (text) rows, fp16, bf16 or fp32,
            ``Lq >= 1``. Any strides.
        k: ``[B, Hk, Lk, D]`` post-RoPE keys of the whole prefix, same dtype and device;
            ``Hq % Hk == 0`` (query head ``h`` reads key head ``h // (Hq // Hk)``).
        video_start, video_end: the video keys are ``k[:, :, video_start:video_end]``
            (``0 <= video_start <= video_end <= Lk``; an empty span is allowed).
        scale: softmax scale, default ``D ** -0.5``.
        q_offset: key position of query row 0, in ``[0, Lk - Lq]`` (default ``Lk - Lq``); row
            ``i`` attends causally to keys ``0 .. q_offset + i``.
        out: optional fp32 ``[B, video_end - video_start]`` buffer; the result is *added* into
            it and it is returned, so one buffer accumulates over layers.

    Returns:
        fp32 ``[B, video_end - video_start]``: for each video key, its softmax probability
        (over all keys the row sees) averaged over the ``Hq`` heads and ``Lq`` rows. The
        ``[Lq, Lk]`` score matrix is never materialised.

    Raises:
        TypeError: a non-tensor input, an unsupported or mismatched dtype, a non-int span.
        ValueError: wrong ranks or shapes, ``Hq % Hk != 0``, ``Lq`` of 0 or above ``Lk``, a
            span or ``q_offset`` out of range, mismatched devices, a bad ``scale`` or ``out``.
    """
    video_start, video_end, q_offset = _check_inputs(q, k, video_start, video_end, q_offset, out)
    scale = check_scale(scale, q.shape[-1])
    if backend_for(q.device) == REFERENCE:
        result = video_attention_scores_ref(
            q, k, video_start, video_end, scale=scale, q_offset=q_offset
        ).float()
        return result if out is None else out.add_(result)
    if out is None:
        out = torch.empty(
            (q.shape[0], video_end - video_start), dtype=torch.float32, device=q.device
        )
        return _video_attention_scores_triton(
            q, k, video_start, video_end, scale, q_offset, out, accumulate=False
        )
    return _video_attention_scores_triton(
        q, k, video_start, video_end, scale, q_offset, out, accumulate=True
    )
