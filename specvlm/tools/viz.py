"""What the draft was given: the clip's frames, the verifier's scores as a heat map, the kept
tokens outlined. Used by ``specvlm demo --save-viz``."""

from __future__ import annotations

import numpy as np
import torch


def save_pruning_figure(
    frames: np.ndarray,
    grid: tuple[int, int, int],
    scores: torch.Tensor,
    kept: torch.Tensor,
    path: str,
    *,
    title: str = "",
) -> None:
    """Write a PNG: one column per token frame (frames ``[F, H, W, 3]`` uint8 are sampled to the
    ``T`` token frames), the frame on top, below it the scores ``[T*H*W]`` as a heat map over
    the token grid with the ``kept`` token indices outlined."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError("--save-viz needs matplotlib (pip install matplotlib)") from err

    t, h, w = grid
    heat = scores.float().reshape(t, h, w).numpy()
    kept_mask = torch.zeros(t * h * w, dtype=torch.bool)
    kept_mask[kept.long()] = True
    kept_mask = kept_mask.reshape(t, h, w).numpy()
    pick = np.linspace(0, len(frames) - 1, t).round().astype(int)
    vmax = float(heat.max()) if heat.size and heat.max() > 0 else 1.0
    fig, axes = plt.subplots(2, t, figsize=(1.8 * t, 3.8), squeeze=False)
    for i in range(t):
        top, bottom = axes[0][i], axes[1][i]
        top.imshow(frames[pick[i]])
        top.set_title(f"frame {i}", fontsize=8)
        bottom.imshow(heat[i], cmap="magma", vmin=0.0, vmax=vmax)
        for r, c in zip(*np.nonzero(kept_mask[i]), strict=True):
            bottom.add_patch(
                Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=1.5)
            )
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1][0].set_ylabel("scores / kept", fontsize=8)
    fig.suptitle(title or f"kept {int(kept.numel())} of {t * h * w} video tokens", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
