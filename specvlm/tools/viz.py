"""What the draft was given: the clip's frames, the target's scores as a heat map (with a colour
bar), and the kept tokens outlined, Stage I and Stage II apart. Used by ``specvlm demo
--save-viz``.

Stage I of the ``two_stage`` selector keeps the highest-scoring tokens until they hold ``mass``
of the total score (at most the budget); Stage II spreads the rest of the budget over frames and
a spatial lattice. :func:`stage_one` recomputes which kept tokens are Stage I from the scores,
with the kernels' own definition (:func:`specvlm_kernels.reference.stage1_count_ref`).
"""

from __future__ import annotations

import numpy as np
import torch

STAGE_I = dict(edgecolor="#00e5ff", linestyle="-", linewidth=1.8)
STAGE_II = dict(edgecolor="#7cff4f", linestyle="--", linewidth=1.4)
KEPT = dict(edgecolor="#00e5ff", linestyle="-", linewidth=1.6)


def stage_one(scores: torch.Tensor, keep: int, mass: float) -> torch.Tensor:
    """Bool ``[Nv]``: the tokens of Stage I, the shortest prefix of the scores in descending
    order (ties: lower index first) that reaches ``mass`` of their total, at most ``keep``."""
    from specvlm_kernels.reference import stage1_count_ref

    scores = scores.float().reshape(-1)
    count = int(stage1_count_ref(scores[None], keep, mass)[0])
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order[:count]] = True
    return mask


def save_pruning_figure(
    frames: np.ndarray,
    grid: tuple[int, int, int],
    scores: torch.Tensor,
    kept: torch.Tensor | None,
    path: str,
    *,
    selector: str = "two_stage",
    mass: float = 0.4,
    drop_rate: float | None = None,
    tau: float | None = None,
    subtitle: str = "",
) -> None:
    """Write the figure to ``path`` (PNG, PDF or SVG, by its suffix): one column per token frame
    (``frames [F, H, W, 3]`` uint8 are sampled to the ``T`` token frames), the frame on top and
    the scores ``[T*H*W]`` below it, both at the frame's aspect with the token grid laid over
    the whole frame, the ``kept`` indices outlined on both (Stage I solid, Stage II dashed for
    the ``two_stage`` selector; ``kept`` None: nothing was pruned), a colour bar for the scores
    and a title with the selector, drop rate, tau and kept tokens."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - the demo checks before any work
        raise RuntimeError("--save-viz needs matplotlib (pip install matplotlib)") from err

    t, h, w = grid
    kinds = token_kinds(scores, kept, grid, selector, mass)
    frame_h, frame_w = frames.shape[1:3]
    col_w = 1.7
    fig_h = 2 * col_w * frame_h / frame_w + 1.5
    fig, axes = plt.subplots(
        2, t, figsize=(col_w * t + 1.0, fig_h), squeeze=False, layout="constrained"
    )
    image = _draw_columns(axes, frames, scores.float().reshape(t, h, w).numpy(), kinds, selector)
    axes[0][0].set_ylabel("frames", fontsize=8)
    axes[1][0].set_ylabel("target's scores", fontsize=8)
    bar = fig.colorbar(image, ax=list(axes[1]), fraction=0.025, pad=0.01)
    bar.set_label("attention score (sum over layers)", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    title = _title(kinds, kept is None, selector, drop_rate, tau)
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    if kept is not None:
        handles = _legend_handles(selector, mass)
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=len(handles),
            fontsize=7,
            frameon=False,
        )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def token_kinds(
    scores: torch.Tensor, kept: torch.Tensor | None, grid: tuple[int, int, int], selector, mass
) -> np.ndarray:
    """Int8 ``[T, H, W]``: 0 dropped, 1 Stage I (or kept, for other selectors), 2 Stage II."""
    t, h, w = grid
    kinds = np.zeros(t * h * w, dtype=np.int8)
    if kept is not None:
        kinds[kept.long().numpy()] = 2 if selector == "two_stage" else 1
        if selector == "two_stage":
            first = stage_one(scores, int(kept.numel()), mass).numpy()
            kinds[first & (kinds == 2)] = 1
    return kinds.reshape(t, h, w)


def _draw_columns(axes, frames: np.ndarray, heat: np.ndarray, kinds: np.ndarray, selector: str):
    """Each token frame's column: the frame and the scores, kept tokens outlined on both;
    returns the last heat map's image (for the colour bar)."""
    from matplotlib.patches import Rectangle

    t, h, w = kinds.shape
    pick = np.linspace(0, len(frames) - 1, t).round().astype(int)
    frame_h, frame_w = frames.shape[1:3]
    cell_w, cell_h = frame_w / w, frame_h / h
    vmax = float(heat.max()) if heat.size and heat.max() > 0 else 1.0
    image = None
    for i in range(t):
        top, bottom = axes[0][i], axes[1][i]
        top.imshow(frames[pick[i]], extent=(0, frame_w, frame_h, 0))
        top.set_title(f"frame {i}", fontsize=8)
        image = bottom.imshow(
            heat[i], cmap="magma", vmin=0.0, vmax=vmax, extent=(0, frame_w, frame_h, 0)
        )
        for r, c in zip(*np.nonzero(kinds[i]), strict=True):
            two_stage = selector == "two_stage"
            style = STAGE_II if kinds[i, r, c] == 2 else STAGE_I if two_stage else KEPT
            for ax in (top, bottom):
                ax.add_patch(
                    Rectangle((c * cell_w, r * cell_h), cell_w, cell_h, fill=False, **style)
                )
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
    return image


def _title(kinds: np.ndarray, unpruned: bool, selector: str, drop_rate, tau) -> str:
    total, n_kept = kinds.size, int((kinds > 0).sum())
    parts = [f"selector {selector}"]
    if drop_rate is not None:
        parts.append(f"drop rate {drop_rate:g}")
    if unpruned:
        parts.append(f"nothing pruned (the answer ended at its first token), {total} video tokens")
    else:
        what = f"kept {n_kept} of {total} video tokens"
        if selector == "two_stage":
            n_first = int((kinds == 1).sum())
            what += f" (Stage I {n_first}, Stage II {n_kept - n_first})"
        parts.append(what)
    if tau is not None:
        parts.append(f"tau {tau:.2f}")
    return ", ".join(parts)


def _legend_handles(selector: str, mass: float) -> list:
    from matplotlib.lines import Line2D

    if selector != "two_stage":
        return [Line2D([], [], color=KEPT["edgecolor"], label=f"kept ({selector})")]
    return [
        Line2D(
            [],
            [],
            color=STAGE_I["edgecolor"],
            linestyle="-",
            label=f"Stage I: top scores up to {mass:g} of the mass",
        ),
        Line2D(
            [],
            [],
            color=STAGE_II["edgecolor"],
            linestyle="--",
            label="Stage II: spread over frames and a lattice",
        ),
    ]
