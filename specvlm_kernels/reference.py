"""Plain-PyTorch oracles for the three SpecVLM ops.

These functions define what the Triton kernels compute. They favour obviousness over speed
(they materialise full score matrices and sort), and they assume their inputs were validated
by the public entry points in :mod:`specvlm_kernels`. Arithmetic is fp32 for fp16/bf16/fp32
inputs and fp64 for fp64 inputs (so tests can build exact results from upcast inputs); Stage-I
mass sums are always fp64.
"""

from __future__ import annotations

import functools

import torch

__all__ = [
    "video_attention_scores_ref",
    "tree_attention_ref",
    "select_video_tokens_ref",
    "prune_video_tokens_ref",
    "stage1_count_ref",
    "readable_scores",
    "frame_quotas_ref",
    "spatial_priority",
    "spread_pick",
]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# 1. Verifier attention scores
# --------------------------------------------------------------------------------------------
def video_attention_scores_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    video_start: int,
    video_end: int,
    *,
    scale: float | None = None,
    q_offset: int | None = None,
) -> torch.Tensor:
    """Mean softmax attention that the ``Lq`` query rows pay to each video key.

    ``q`` ``[B, Hq, Lq, D]``, ``k`` ``[B, Hk, Lk, D]``; query row ``i`` sits at key position
    ``q_offset + i`` and sees keys ``0 .. q_offset + i``. Returns fp32 ``[B, video_end -
    video_start]``: ``mean_h mean_i softmax_j(scale * q[h, i] . k[h // G, j])`` over the span.

    A row pays exactly 0 to the keys it does not see. Non-finite inputs propagate as in
    attention (and as in the kernels), through the keys a row sees: a row with a NaN or ``+inf``
    score on a visible key (or only ``-inf`` ones) has NaN weights on every key it sees, so the
    video keys it sees get NaN; a ``-inf`` score weighs 0.
    """
    b, hq, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    q_offset = lk - lq if q_offset is None else q_offset
    acc = _compute_dtype(q.dtype)
    kf = k.to(acc).repeat_interleave(hq // hk, dim=1)
    s = torch.einsum("bhid,bhjd->bhij", q.to(acc), kf) * scale
    row_pos = torch.arange(lq, device=q.device) + q_offset
    col_pos = torch.arange(lk, device=q.device)
    hidden = col_pos[None, :] > row_pos[:, None]
    p = torch.softmax(s.masked_fill(hidden, float("-inf")), dim=-1).masked_fill(hidden, 0.0)
    return p[..., video_start:video_end].mean(dim=(1, 2))


# --------------------------------------------------------------------------------------------
# 2. Tree attention
# --------------------------------------------------------------------------------------------
def tree_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tree_mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of ``N`` tree nodes over a shared prefix plus the tree itself.

    ``q`` ``[B, Hq, N, D]``; ``k``, ``v`` ``[B, Hk, L, D]`` whose last ``N`` positions are the
    nodes. Every node sees the ``L - N`` prefix keys; among the nodes, node ``i`` sees node
    ``j`` iff ``tree_mask[(b,) i, j]`` (``None``: ``j <= i``). A node that sees no key at all
    gets a zero output. Returns ``[B, Hq, N, D]`` in ``q.dtype``.

    Non-finite inputs propagate as in attention (and as in the kernel): a NaN score of a visible
    key, or a ``+inf`` one, makes the row NaN; a ``-inf`` score weighs 0; ``P @ V`` runs over
    all ``L`` keys, so a NaN or infinite value in ``v`` reaches every row of its KV head
    (``0 * nan``). A row whose scores are all ``-inf`` (no visible key, or only ``-inf`` ones)
    has weights 0 (the online softmax's empty sum), not NaN.

    ``lengths`` (integer ``[B]`` or ``[]``): row ``b`` uses only its first ``lengths[b]`` keys
    (clamped to ``[N, L]``), i.e. the same op on ``k[b, :, :lengths[b]]``.
    """
    if lengths is not None:
        length = lengths.expand(q.shape[0]).clamp(q.shape[2], k.shape[2]).tolist()
        rows = []
        for b, n_keys in enumerate(length):
            mask_b = tree_mask
            if tree_mask is not None and tree_mask.dim() == 3:
                mask_b = tree_mask[b if tree_mask.shape[0] > 1 else 0]
            rows.append(
                tree_attention_ref(
                    q[b : b + 1],
                    k[b : b + 1, :, :n_keys],
                    v[b : b + 1, :, :n_keys],
                    mask_b,
                    scale=scale,
                )
            )
        return torch.cat(rows) if rows else q.new_zeros(q.shape)
    b, hq, n, d = q.shape
    hk, length = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    group = hq // hk
    if tree_mask is None:
        tree_mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    if tree_mask.dim() == 2:
        tree_mask = tree_mask.unsqueeze(0)
    prefix = torch.ones(tree_mask.shape[0], n, length - n, dtype=torch.bool, device=q.device)
    visible = torch.cat([prefix, tree_mask.to(q.device)], dim=-1)[:, None]  # [B|1, 1, N, L]
    acc = _compute_dtype(q.dtype)
    kf = k.to(acc).repeat_interleave(group, dim=1)
    vf = v.to(acc).repeat_interleave(group, dim=1)
    s = torch.einsum("bhid,bhjd->bhij", q.to(acc), kf) * scale
    s = s.masked_fill(~visible, float("-inf"))
    # rows whose scores are all -inf (e.g. that see no key): weights 0, not softmax's NaN;
    # NaN anywhere else propagates
    empty = (s == float("-inf")).all(dim=-1, keepdim=True)
    p = torch.softmax(s.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return torch.einsum("bhij,bhjd->bhid", p, vf).to(q.dtype)


# --------------------------------------------------------------------------------------------
# 3. Two-stage token selection
# --------------------------------------------------------------------------------------------
def spread_pick(rank: torch.Tensor, count, total) -> torch.Tensor:
    """True for the ``count`` of ``total`` ranks ``0 .. total-1`` that a centred, evenly spaced
    pick selects (rank ``r`` is picked iff ``round(r * count / total)`` steps up at ``r + 1``).

    Exactly ``count`` ranks are picked whenever ``0 <= count <= total``; integer arithmetic
    only, so every backend picks the same ranks. ``count``/``total`` may be tensors that
    broadcast against ``rank``.
    """
    rank = rank.to(torch.int64)
    count = torch.as_tensor(count, dtype=torch.int64, device=rank.device)
    total = torch.as_tensor(total, dtype=torch.int64, device=rank.device)
    den = 2 * total.clamp(min=1)
    after = ((2 * rank + 2) * count + total) // den
    before = (2 * rank * count + total) // den
    return after > before


def _reversed_bits(x: torch.Tensor, bits: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    for i in range(bits):
        out |= ((x >> i) & 1) << (bits - 1 - i)
    return out


def _axis_key(n: int, bits: int) -> torch.Tensor:
    """Coarse-to-fine key of each coordinate ``0 .. n-1`` of one axis, left-aligned to
    ``bits`` bits: the coordinates are centred in the next power of two ``P``, turned by
    ``P / 2`` (so coordinate ``n // 2``, the middle, gets key 0) and bit-reversed."""
    own_bits = max(n - 1, 0).bit_length()
    size = 1 << own_bits
    pad = (size - n + 1) // 2
    turned = (torch.arange(n, dtype=torch.int64) + pad + size // 2) % size
    return _reversed_bits(turned, own_bits) << (bits - own_bits)


@functools.lru_cache(maxsize=64)
def spatial_priority(height: int, width: int) -> torch.Tensor:
    """Priority (lower first) of each position of an ``height x width`` frame, row-major
    ``[height * width]`` int64, unique per position.

    Taking the positions in priority order fills a uniform lattice coarse to fine, starting at
    the frame's middle ``(height // 2, width // 2)``: in a frame whose sides are multiples of
    ``2^k`` (k >= 1) the first ``4^k`` positions form a ``2^k x 2^k`` lattice of stride
    ``side / 2^k``; sides that are not powers of two are centred in the next power of two
    first, so their coarse lattices sit about the middle of the frame. Rows and columns are
    bit-reversed and their keys interleaved bit by bit, row bit first. (The middle first: a
    frame that gets one Stage-II token gets its centre, not its top-left corner; on the micro
    pair's clips a corner token touches a shape in 9% of frames, a middle one in 36-42%.)
    """
    bits = max(max(height - 1, 0).bit_length(), max(width - 1, 0).bit_length())
    kh = _axis_key(height, bits)[:, None]
    kw = _axis_key(width, bits)[None, :]
    prio = torch.zeros(height, width, dtype=torch.int64)
    for i in range(bits):
        prio |= ((kh >> i) & 1) << (2 * i + 1)
        prio |= ((kw >> i) & 1) << (2 * i)
    return prio.reshape(-1)


def readable_scores(scores: torch.Tensor) -> torch.Tensor:
    """The scores as the selection reads them: a negative, infinite or NaN score counts as 0
    (the public functions reject such scores; unchecked, the kernels read them so)."""
    return torch.where(
        torch.isfinite(scores) & (scores >= 0), scores, torch.zeros((), dtype=scores.dtype)
    )


def stage1_count_ref(scores: torch.Tensor, keep: int, mass: float) -> torch.Tensor:
    """Stage-I size per row, int64 ``[B]``: the smallest ``m`` such that the ``m`` highest
    scores (ties: lower index first) sum to at least ``mass * scores.sum()``, capped at
    ``keep``; 0 when ``mass * sum <= 0``. Sums are fp64. Scores are read by
    :func:`readable_scores`."""
    s = readable_scores(scores).double()
    total = s.sum(dim=-1, keepdim=True)
    target = mass * total
    ordered = torch.sort(s, dim=-1, descending=True, stable=True).values
    below = (ordered.cumsum(dim=-1) < target).sum(dim=-1)
    m = torch.where(target.squeeze(-1) > 0, below + 1, torch.zeros_like(below))
    return m.clamp(max=min(keep, s.shape[-1]))


def frame_quotas_ref(free: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Split ``budget[b]`` slots over frames with ``free[b, t]`` unselected tokens each.

    Water-filling: every frame gets ``min(free, level)`` for the largest ``level`` whose total
    fits the budget; the ``extra`` slots left go one each to frames that still have room,
    spread evenly over them (:func:`spread_pick` over those frames in order). Without
    saturated frames the quotas differ by at most one. Requires ``budget <= free.sum(-1)``.
    Returns int64 ``[B, T]``.
    """
    free = free.to(torch.int64)
    budget = budget.to(torch.int64)
    nb, _ = free.shape
    hi = free.max(dim=-1).values if free.numel() else torch.zeros(nb, dtype=torch.int64)
    lo = torch.zeros(nb, dtype=torch.int64)
    # largest level in [0, max(free)] with sum(min(free, level)) <= budget (level 0 always fits)
    while bool((lo < hi).any()):
        mid = (lo + hi + 1) // 2
        fits = free.minimum(mid[:, None]).sum(dim=-1) <= budget
        lo = torch.where(fits, mid, lo)
        hi = torch.where(fits, hi, mid - 1)
    base = free.minimum(lo[:, None])
    extra = budget - base.sum(dim=-1)
    room = free > lo[:, None]
    room_rank = room.cumsum(dim=-1) - 1
    bonus = room & spread_pick(room_rank, extra[:, None], room.sum(dim=-1, keepdim=True))
    return base + bonus.to(torch.int64)


def select_video_tokens_ref(
    scores: torch.Tensor,
    keep: int,
    *,
    mass: float = 0.4,
    grid: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Two-stage selection of ``keep`` of ``Nv`` video tokens; int64 ``[B, keep]`` ascending.

    Stage I: the :func:`stage1_count_ref` highest-scoring tokens. Stage II: the remaining
    ``r = keep - m`` slots among the unselected tokens. Without ``grid``: :func:`spread_pick`
    over the unselected tokens in index order. With ``grid=(T, H, W)``: :func:`frame_quotas_ref`
    splits ``r`` over the frames, and each frame takes its quota from its unselected tokens in
    :func:`spatial_priority` order. Scores are read by :func:`readable_scores`.
    """
    scores = readable_scores(scores)
    nb, nv = scores.shape
    device = scores.device
    m = stage1_count_ref(scores, keep, mass)
    order = torch.sort(scores.double(), dim=-1, descending=True, stable=True).indices
    in_stage1 = torch.arange(nv, device=device)[None, :] < m[:, None]
    chosen = torch.zeros(nb, nv, dtype=torch.bool, device=device)
    chosen.scatter_(1, order, in_stage1)
    rest = keep - m
    free = ~chosen
    if grid is None:
        rank = free.cumsum(dim=-1) - 1
        chosen |= free & spread_pick(rank, rest[:, None], free.sum(dim=-1, keepdim=True))
    else:
        t, h, w = grid
        free_frames = free.view(nb, t, h * w)
        quotas = frame_quotas_ref(free_frames.sum(dim=-1).cpu(), rest.cpu()).to(device)
        prio_order = torch.argsort(spatial_priority(h, w)).to(device)
        free_by_prio = free_frames[:, :, prio_order]  # [B, T, HW] in priority order
        take = free_by_prio & (free_by_prio.cumsum(dim=-1) <= quotas[:, :, None])
        picked = torch.zeros_like(free_frames)
        picked[:, :, prio_order] = take
        chosen |= picked.view(nb, nv)
    idx = torch.arange(nv, device=device).expand(nb, nv)
    return idx[chosen].view(nb, keep)


def prune_video_tokens_ref(
    features: torch.Tensor,
    scores: torch.Tensor,
    keep: int,
    *,
    mass: float = 0.4,
    grid: tuple[int, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`select_video_tokens_ref` followed by a gather of the kept rows of ``features``
    ``[B, Nv, C]``. Returns ``(kept_features [B, keep, C], indices [B, keep])``."""
    idx = select_video_tokens_ref(scores, keep, mass=mass, grid=grid)
    kept = features.gather(1, idx[:, :, None].expand(-1, -1, features.shape[-1]))
    return kept, idx
