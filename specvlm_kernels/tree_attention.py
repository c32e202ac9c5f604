"""Tree attention for speculative decoding: ``N`` draft-tree nodes over a shared prefix.

Public entry point: :func:`tree_attention`. Semantics are exactly those of
:func:`specvlm_kernels.reference.tree_attention_ref`; the design is described in
``docs/kernels/tree_attention.md``.

Two launches (flash-decoding style):

1. ``_tree_attn_split_kernel``, grid ``(m_blocks, splits, B * Hk)``. One program takes one KV head
   ``(b, kh)``, one contiguous range ("split") of the ``L`` keys and one tile of ``BLOCK_M`` rows
   of the ``M = G * N`` (query head of the group, node) pairs that share this KV head, so K/V
   are read once per KV head (per row tile). It runs an online softmax over its key blocks: the
   blocks that lie wholly in the prefix skip the tree mask, the others apply it to the keys at
   positions ``>= L - N``. It writes a normalised fp32 partial output and its base-2
   log-sum-exp per row and split (or, with a single split, the final output directly).
2. ``_tree_attn_merge_kernel``, grid ``(cdiv(B * Hq * N, BLOCK_R),)``: combines the partials of
   each row in a fixed split order with their log-sum-exp weights.

No atomics, fixed reduction orders: results are bitwise reproducible for a given shape, dtype
and device. The launch configuration depends only on shapes, dtypes and the device's SM count
(queried once per device and cached), so the call has no host synchronisation and can be
captured in a CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from specvlm_kernels._checks import (
    FLOAT_DTYPES,
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
    value_checks,
    waves_split,
)
from specvlm_kernels.reference import tree_attention_ref

__all__ = ["tree_attention"]

_LOG2E = 1.4426950408889634


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _attend_block(
    q,
    m_i,
    l_i,
    acc,
    k_base,
    v_base,
    mask_base,
    start,
    hi,
    prefix_len,
    node,
    row_valid,
    offs_d,
    d_valid,
    qk_scale,
    stride_kl,
    stride_kd,
    stride_vl,
    stride_vd,
    stride_mi,
    stride_mj,
    APPLY_TREE: tl.constexpr,
    CAUSAL: tl.constexpr,
    DOT_F32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One online-softmax step over the keys ``start .. start + BLOCK_N`` (clipped to ``hi``).

    ``start`` is int64 (compiled) or a Python int (interpreter), so ``start * stride`` cannot
    overflow."""
    offs_n = tl.arange(0, BLOCK_N)
    pos = start + offs_n
    key_in_split = pos < hi
    kv_tile_mask = key_in_split[:, None] & d_valid[None, :]
    k_ptrs = k_base + start * stride_kl + offs_n[:, None] * stride_kl + offs_d[None, :] * stride_kd
    k = tl.load(k_ptrs, mask=kv_tile_mask, other=0.0)
    if DOT_F32:
        k = k.to(tl.float32)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # log2 domain

    visible = key_in_split[None, :]
    if APPLY_TREE:
        tree_col = pos - prefix_len  # node index of each key; < 0 for prefix keys
        is_tree_key = tree_col >= 0
        if CAUSAL:
            tree_ok = tree_col[None, :] <= node[:, None]
        else:
            # int32 gather offsets (the mask is [N, N]): fewer registers than int64 ones
            col = tree_col.to(tl.int32)
            mask_load_mask = row_valid[:, None] & (key_in_split & is_tree_key)[None, :]
            bits = tl.load(
                mask_base + node[:, None] * stride_mi + col[None, :] * stride_mj,
                mask=mask_load_mask,
                other=0,
            )
            tree_ok = bits != 0
        visible = visible & (tree_ok | (~is_tree_key)[None, :])
    s = tl.where(visible, s, float("-inf"))

    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    # A row that has seen nothing yet keeps m = -inf; shift by 0 so exp2 gives 0, not NaN.
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_shift)
    p = tl.math.exp2(s - m_shift[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)

    v_ptrs = v_base + start * stride_vl + offs_n[:, None] * stride_vl + offs_d[None, :] * stride_vd
    v = tl.load(v_ptrs, mask=kv_tile_mask, other=0.0)
    if DOT_F32:
        pv = tl.dot(p, v.to(tl.float32), input_precision=DOT_PRECISION)
    else:
        pv = tl.dot(p.to(v.dtype), v)
    acc = acc * alpha[:, None] + pv
    return m_new, l_i, acc


@triton.jit(do_not_specialize=["num_nodes", "m_rows", "buf_len", "num_splits"])
def _tree_attn_split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    mask_ptr,
    o_ptr,
    lse_ptr,
    qk_scale,
    num_kv_heads,
    group,
    num_nodes,
    m_rows,
    buf_len,
    num_splits,
    len_ptr,
    stride_len,
    head_dim,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kl,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vl,
    stride_vd,
    stride_mb,
    stride_mi,
    stride_mj,
    stride_ob,
    stride_oh,
    stride_on,
    stride_os,
    stride_od,
    stride_lb,
    stride_lh,
    stride_ln,
    stride_ls,
    CAUSAL: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    WRITE_LSE: tl.constexpr,
    DOT_F32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = (pid_bh // num_kv_heads).to(tl.int64)
    kh = (pid_bh % num_kv_heads).to(tl.int64)

    # Row r of the packed tile is (query head kh * group + r // N, node r % N).
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = rows < m_rows
    node = rows % num_nodes
    qhead = kh * group + (rows // num_nodes).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < head_dim
    row_tile_mask = row_valid[:, None] & d_valid[None, :]

    q_ptrs = (
        q_ptr
        + b * stride_qb
        + qhead[:, None] * stride_qh
        + node[:, None] * stride_qn
        + offs_d[None, :] * stride_qd
    )
    q = tl.load(q_ptrs, mask=row_tile_mask, other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)

    k_base = k_ptr + b * stride_kb + kh * stride_kh
    v_base = v_ptr + b * stride_vb + kh * stride_vh
    mask_base = mask_ptr + b * stride_mb

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # The current length: the whole buffer, or read on the device (a static buffer whose
    # first `length` keys are valid; clamped to [N, buffer] so no access leaves the buffer).
    if HAS_LENGTHS:
        length = tl.load(len_ptr + b * stride_len).to(tl.int32)
        length = tl.minimum(tl.maximum(length, num_nodes), buf_len)
    else:
        length = buf_len
    prefix_len = length - num_nodes
    # Equal whole numbers of key blocks per split, from the current length.
    keys_per_split = tl.cdiv(tl.cdiv(length, BLOCK_N), num_splits) * BLOCK_N
    # int64 key positions: the loop variable times the key stride may pass 2^31.
    lo = pid_s.to(tl.int64) * keys_per_split
    hi = tl.minimum(lo + keys_per_split, length)  # < lo for an empty split: no iterations
    # Blocks wholly inside the prefix need no tree mask; the rest (at most the tree span plus
    # one block) apply it, in blocks of BLOCK_T keys (half of BLOCK_N on the GPU: the mask
    # gather's layout makes Triton keep the softmax of those blocks in two layouts, which
    # spilled registers at 64 x 64 x 128 under Triton 3.6; docs/kernels/tree_attention.md).
    n_prefix_blocks = tl.maximum(tl.minimum(hi, prefix_len) - lo, 0) // BLOCK_N
    mid = lo + n_prefix_blocks * BLOCK_N
    for start in range(lo, mid, BLOCK_N):
        m_i, l_i, acc = _attend_block(
            q,
            m_i,
            l_i,
            acc,
            k_base,
            v_base,
            mask_base,
            start,
            hi,
            prefix_len,
            node,
            row_valid,
            offs_d,
            d_valid,
            qk_scale,
            stride_kl,
            stride_kd,
            stride_vl,
            stride_vd,
            stride_mi,
            stride_mj,
            False,
            CAUSAL,
            DOT_F32,
            DOT_PRECISION,
            BLOCK_N,
        )
    for start in range(mid, hi, BLOCK_T):
        m_i, l_i, acc = _attend_block(
            q,
            m_i,
            l_i,
            acc,
            k_base,
            v_base,
            mask_base,
            start,
            hi,
            prefix_len,
            node,
            row_valid,
            offs_d,
            d_valid,
            qk_scale,
            stride_kl,
            stride_kd,
            stride_vl,
            stride_vd,
            stride_mi,
            stride_mj,
            True,
            CAUSAL,
            DOT_F32,
            DOT_PRECISION,
            BLOCK_T,
        )

    # Rows that saw no key (empty split, or a node with an all-False row and no prefix) have
    # l = 0 and acc = 0: their output is 0 and their log-sum-exp -inf.
    seen = l_i > 0.0
    o = acc / tl.where(seen, l_i, 1.0)[:, None]
    o_ptrs = (
        o_ptr
        + b * stride_ob
        + qhead[:, None] * stride_oh
        + node[:, None] * stride_on
        + pid_s.to(tl.int64) * stride_os
        + offs_d[None, :] * stride_od
    )
    tl.store(o_ptrs, o.to(o_ptr.dtype.element_ty), mask=row_tile_mask)
    if WRITE_LSE:
        lse = tl.where(seen, m_i + tl.math.log2(tl.where(seen, l_i, 1.0)), float("-inf"))
        lse_ptrs = (
            lse_ptr
            + b * stride_lb
            + qhead * stride_lh
            + node * stride_ln
            + pid_s.to(tl.int64) * stride_ls
        )
        tl.store(lse_ptrs, lse, mask=row_valid)


@triton.jit(do_not_specialize=["total_rows", "num_splits", "num_nodes"])
def _tree_attn_merge_kernel(
    po_ptr,
    plse_ptr,
    out_ptr,
    total_rows,
    num_splits,
    num_heads,
    num_nodes,
    head_dim,
    stride_por,
    stride_pos,
    stride_pod,
    stride_lr,
    stride_ls,
    stride_ob,
    stride_oh,
    stride_on,
    stride_od,
    ROWS: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """``ROWS`` rows x ``BLOCK_D`` columns per program; all splits of a row at once (in chunks of
    ``BLOCK_S``, rescaled online), in a fixed order."""
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_s = tl.arange(0, BLOCK_S)
    for i in tl.static_range(ROWS):
        row = tl.program_id(0) * ROWS + i
        # limits instead of a scalar mask (the interpreter rejects scalar & vector masks)
        split_lim = tl.where(row < total_rows, num_splits, 0)
        d_lim = tl.where(row < total_rows, head_dim, 0)
        row64 = row.to(tl.int64)
        m = tl.full((), float("-inf"), dtype=tl.float32)
        den = tl.zeros((), dtype=tl.float32)
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for s0 in range(0, num_splits, BLOCK_S):
            split = s0 + offs_s
            ok = split < split_lim
            lse = tl.load(
                plse_ptr + row64 * stride_lr + split * stride_ls, mask=ok, other=float("-inf")
            )
            m_new = tl.maximum(m, tl.max(lse, 0))
            m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.math.exp2(m - m_shift)  # 0 while nothing was seen
            w = tl.math.exp2(lse - m_shift)  # 0 for a split that saw nothing
            o = tl.load(
                po_ptr
                + row64 * stride_por
                + split[:, None] * stride_pos
                + offs_d[None, :] * stride_pod,
                mask=ok[:, None] & (offs_d < head_dim)[None, :],
                other=0.0,
            )
            acc = acc * alpha + tl.sum(w[:, None] * o, 0)
            den = den * alpha + tl.sum(w, 0)
            m = m_new
        out = acc / tl.where(den > 0.0, den, 1.0)
        node = row64 % num_nodes
        bh = row64 // num_nodes
        head = bh % num_heads
        b = bh // num_heads
        out_ptrs = (
            out_ptr + b * stride_ob + head * stride_oh + node * stride_on + offs_d * stride_od
        )
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=offs_d < d_lim)


# --------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------
def _config(q: torch.Tensor, m_rows: int, head_dim: int) -> dict:
    """Tile sizes and warps (a fixed heuristic: autotuning does not run under the interpreter).

    GPU, fp16/bf16: row tiles of 16..64 rows (16..32 for D > 128), 64-key blocks (a 64 x 128
    K tile is 16 KiB) over the prefix and 32-key blocks (``BLOCK_T``) where the tree mask
    applies (64-key masked blocks of 64-row tiles spilled registers under Triton 3.6's ptxas),
    8 warps for row tiles above 16 rows (sm_90 builds of the 64 x 64 x 128 tile spill
    registers with 4, and of 64 x 64 x 256 even with 8). GPU, fp32: the exact-fp32 ("ieee")
    dots run on FMA units and hold both operands in registers, so 16-row tiles, 16-key blocks,
    8 warps (32-key blocks spilled on sm_80). Interpreter: 32-key blocks and 16-key masked
    blocks, so the short test sequences still span several blocks of both kinds.
    """
    on_gpu = gpu_config(q.device)
    block_d = max(16, triton.next_power_of_2(head_dim))
    wide = q.element_size() <= 2
    max_m = (64 if block_d <= 128 else 32) if wide else 16
    block_m = min(max(16, triton.next_power_of_2(m_rows)), max_m)
    block_n = (64 if wide else 16) if on_gpu else 32
    num_warps = 4 if wide and block_m == 16 else 8
    return {
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "BLOCK_T": _tree_block(block_n),
        "BLOCK_D": block_d,
        "num_warps": num_warps,
    }


def _tree_block(block_n: int) -> int:
    """Keys per block where the tree mask applies: half a prefix block, at least 16
    (``tl.dot``'s minimum)."""
    return max(16, block_n // 2)


MAX_SPLITS = 64


def _choose_splits(
    length: int,
    block_n: int,
    base_programs: int,
    rows_per_program: int,
    elt_bytes: int,
    device: torch.device,
) -> int:
    """Number of key ranges per (KV head, row tile).

    By waves over the SMs (:func:`specvlm_kernels._dispatch.waves_split`: the count that
    balances the busiest SM's load best), at most :data:`MAX_SPLITS` and the number of key
    blocks, and every split keeps at least ``16 * rows / elt_bytes`` keys so the fp32 partials
    it writes (and the merge reads back) cost at most about a quarter of the K/V bytes it
    reads. Splits get equal numbers of blocks (computed in the kernel from the length)."""
    n_blocks = triton.cdiv(length, block_n)
    if n_blocks <= 1:
        return 1
    min_keys = max(block_n, 16 * rows_per_program // elt_bytes)
    max_splits = max(1, min(MAX_SPLITS, n_blocks, length // min_keys))
    return waves_split(base_programs, n_blocks, max_splits, sm_count(device))


def _merge_config(total_rows: int, num_splits: int, head_dim: int, device) -> dict:
    """Merge tiles: ``BLOCK_D`` columns (at most 64) of ``ROWS`` rows per program, all splits
    at once (``BLOCK_S``: 16 up to 16 splits, else 64 = ``MAX_SPLITS``), with ``ROWS`` 4 when
    that still leaves two programs per SM, else 1 (few configurations: few compilations)."""
    block_d = min(max(16, triton.next_power_of_2(head_dim)), 64)
    d_blocks = triton.cdiv(head_dim, block_d)
    rows = 4 if triton.cdiv(total_rows, 4) * d_blocks >= 2 * sm_count(device) else 1
    block_s = 16 if num_splits <= 16 else max(MAX_SPLITS, triton.next_power_of_2(num_splits))
    return {"ROWS": rows, "BLOCK_S": block_s, "BLOCK_D": block_d, "num_warps": 4}


def _tree_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tree_mask: torch.Tensor | None,
    scale: float,
    *,
    lengths: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    num_splits: int | None = None,
    block_n: int | None = None,
    partial_out: torch.Tensor | None = None,
    partial_lse: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the kernels on validated inputs.

    ``lengths`` (integer ``[B]`` or ``[]`` on the device): the current length of each batch row
    in the static buffers ``k``/``v`` (clamped to ``[N, L]`` in the kernel). ``out``
    (``[B, Hq, N, D]``, any strides), ``num_splits``, ``block_n`` and the fp32 scratch
    ``partial_out`` (contiguous ``[B, Hq, N, splits, D]``) / ``partial_lse`` (contiguous
    ``[B, Hq, N, splits]``) are for tests: they let them poison buffers with NaN and force split
    counts. With one split the scratch is not used.
    """
    b, hq, n, d = q.shape
    hk, length = k.shape[1], k.shape[2]
    group = hq // hk
    if out is None:
        out = torch.empty((b, hq, n, d), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    check_compiled(_tree_attn_split_kernel, q.device)

    m_rows = group * n
    cfg = _config(q, m_rows, d)
    if block_n is not None:
        cfg["BLOCK_N"], cfg["BLOCK_T"] = block_n, _tree_block(block_n)
    m_blocks = triton.cdiv(m_rows, cfg["BLOCK_M"])
    if num_splits is None:
        num_splits = _choose_splits(
            length,
            cfg["BLOCK_N"],
            m_blocks * b * hk,
            min(m_rows, cfg["BLOCK_M"]),
            q.element_size(),
            q.device,
        )

    if tree_mask is None:
        causal = True
        mask_arg, mstrides = q, (0, 0, 0)  # never read
    else:
        causal = False
        mask3 = tree_mask if tree_mask.dim() == 3 else tree_mask.unsqueeze(0)
        mask_arg = mask3.view(torch.uint8)  # same bytes; avoids i1 pointers
        mstrides = (mask3.stride(0) if mask3.shape[0] > 1 else 0, mask3.stride(1), mask3.stride(2))
    if lengths is None:
        len_arg, len_stride = q, 0  # never read
    else:
        len_arg, len_stride = lengths, (lengths.stride(0) if lengths.dim() == 1 else 0)

    # Interpreter (CPU): fp16/bf16 dots are unreliable there, so upcast and do them in fp32.
    dot_f32 = q.dtype == torch.float32 or not gpu_config(q.device)
    dot_precision = "ieee" if dot_f32 else "tf32"  # "tf32" is ignored for 16-bit operands

    single = num_splits == 1
    if single:
        o_arg = out
        ostrides = (out.stride(0), out.stride(1), out.stride(2), 0, out.stride(3))
        lse_arg, lstrides = out, (0, 0, 0, 0)  # never written
    else:
        if partial_out is None:
            partial_out = torch.empty(
                (b, hq, n, num_splits, d), dtype=torch.float32, device=q.device
            )
        if partial_lse is None:
            partial_lse = torch.empty((b, hq, n, num_splits), dtype=torch.float32, device=q.device)
        o_arg, ostrides = partial_out, partial_out.stride()
        lse_arg, lstrides = partial_lse, partial_lse.stride()

    with device_guard(q.device):
        grid = (m_blocks, num_splits, b * hk)
        _tree_attn_split_kernel[grid](
            q,
            k,
            v,
            mask_arg,
            o_arg,
            lse_arg,
            scale * _LOG2E,
            hk,
            group,
            n,
            m_rows,
            length,
            num_splits,
            len_arg,
            len_stride,
            d,
            *q.stride(),
            *k.stride(),
            *v.stride(),
            *mstrides,
            *ostrides,
            *lstrides,
            CAUSAL=causal,
            HAS_LENGTHS=lengths is not None,
            WRITE_LSE=not single,
            DOT_F32=dot_f32,
            DOT_PRECISION=dot_precision,
            num_stages=2,
            **cfg,
        )
        if single:
            return out

        total_rows = b * hq * n
        po_rows = partial_out.view(total_rows, num_splits, d)  # scratch is contiguous
        lse_rows = partial_lse.view(total_rows, num_splits)
        mcfg = _merge_config(total_rows, num_splits, d, q.device)
        grid = (triton.cdiv(total_rows, mcfg["ROWS"]), triton.cdiv(d, mcfg["BLOCK_D"]))
        _tree_attn_merge_kernel[grid](
            po_rows,
            lse_rows,
            out,
            total_rows,
            num_splits,
            hq,
            n,
            d,
            *po_rows.stride(),
            *lse_rows.stride(),
            *out.stride(),
            **mcfg,
        )
    return out


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------
def _check_inputs(q, k, v, tree_mask) -> None:
    check_tensor("q", q, 4, FLOAT_DTYPES)
    check_tensor("k", k, 4, FLOAT_DTYPES)
    check_tensor("v", v, 4, FLOAT_DTYPES)
    check_same_dtype(q=q, k=k, v=v)
    check_same_device(q=q, k=k, v=v)
    check_q_k(q, k, "L")
    b, n = q.shape[0], q.shape[2]
    if v.shape != k.shape:
        raise ValueError(f"v must have the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    if n > k.shape[2]:
        raise ValueError(
            f"k/v must hold at least the N={n} tree nodes of q (N <= L), got L={k.shape[2]}"
        )
    if tree_mask is None:
        return
    if not isinstance(tree_mask, torch.Tensor):
        raise TypeError(f"tree_mask must be a torch.Tensor or None, got {type(tree_mask).__name__}")
    if tree_mask.dtype != torch.bool:
        raise TypeError(f"tree_mask must have dtype bool, got {tree_mask.dtype}")
    ok = (tree_mask.dim() == 2 and tuple(tree_mask.shape) == (n, n)) or (
        tree_mask.dim() == 3
        and tree_mask.shape[0] in (1, b)
        and tuple(tree_mask.shape[1:]) == (n, n)
    )
    if not ok:
        raise ValueError(
            f"tree_mask must have shape [N, N] or [B, N, N] with B={b}, N={n}, "
            f"got {tuple(tree_mask.shape)}"
        )
    if tree_mask.device != q.device:
        raise ValueError(
            f"tree_mask is on {tree_mask.device} but q is on {q.device}; "
            "all tensors must be on one device"
        )


def _check_lengths(lengths, q: torch.Tensor, k: torch.Tensor) -> None:
    if lengths is None:
        return
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths must be a torch.Tensor or None, got {type(lengths).__name__}")
    if lengths.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"lengths must have dtype int32 or int64, got {lengths.dtype}")
    b, n, buf = q.shape[0], q.shape[2], k.shape[2]
    if not (lengths.dim() == 0 or (lengths.dim() == 1 and lengths.shape[0] == b)):
        raise ValueError(f"lengths must have shape [] or [B={b}], got {tuple(lengths.shape)}")
    if lengths.device != q.device:
        raise ValueError(
            f"lengths is on {lengths.device} but q is on {q.device}; "
            "all tensors must be on one device"
        )
    if value_checks(lengths.device) and lengths.numel() > 0:
        low, high = int(lengths.min()), int(lengths.max())
        if low < n or high > buf:
            raise ValueError(
                f"lengths must be in [N={n}, L={buf}] (the tree nodes and the buffer), "
                f"got values in [{low}, {high}]"
            )


def tree_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tree_mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of ``N`` draft-tree nodes over a shared prefix plus the tree itself.

    Args:
        q: ``[B, Hq, N, D]`` queries of the tree nodes (fp16, bf16 or fp32).
        k, v: ``[B, Hk, L, D]``, same dtype and device as ``q``; ``Hq % Hk == 0`` (GQA) and
            ``N <= L``. The last ``N`` positions are the tree nodes, the first ``L - N`` the
            prefix that every node sees. Any strides.
        tree_mask: bool ``[N, N]`` or ``[B, N, N]`` (``[1, N, N]`` broadcasts);
            ``tree_mask[(b,) i, j]`` is true iff node ``i`` may attend node ``j`` (its
            ancestors and itself). ``None``: causal (a chain; ``N = 1`` is plain decoding).
        scale: softmax scale, default ``D ** -0.5``.
        lengths: optional int32/int64 ``[B]`` (or ``[]``, for every row) on the device of
            ``q``: ``k``/``v`` are then static buffers of which the first ``lengths[b]`` keys
            are valid, and the tree nodes sit at ``lengths[b] - N .. lengths[b] - 1`` (keys
            past the length are never read). The length is read on the device, so one
            captured CUDA graph of a decode or verification step replays at every length.
            Values must be in ``[N, L]``: checked on CPU tensors (and on CUDA with
            ``SPECVLM_KERNELS_DEBUG=1``); on CUDA the kernel clamps them into that range.

    Returns:
        ``[B, Hq, N, D]`` in ``q.dtype``. A node that sees no key at all (only possible when
        the length is ``N`` and its mask row is all False) gets zeros.

    Raises:
        TypeError: a non-tensor input, an unsupported or mismatched dtype, a non-bool mask,
            non-integer ``lengths``.
        ValueError: wrong ranks or shapes, ``Hq % Hk != 0``, ``N > L``, mismatched devices,
            a bad ``scale``, ``lengths`` of the wrong shape or (CPU) out of range.
    """
    _check_inputs(q, k, v, tree_mask)
    _check_lengths(lengths, q, k)
    scale = check_scale(scale, q.shape[-1])
    if backend_for(q.device) == REFERENCE:
        return tree_attention_ref(q, k, v, tree_mask, scale=scale, lengths=lengths)
    return _tree_attention_triton(q, k, v, tree_mask, scale, lengths=lengths)
