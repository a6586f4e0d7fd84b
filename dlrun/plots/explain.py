"""Figures of `dlrun explain` and `dlrun attack`: activation maps, a 2-D embedding coloured by
class, accuracy against the attack budget (heat maps over images: plots.images.image_grid)."""

from __future__ import annotations

import numpy as np

from dlrun.plots import new_figure


def activation_grid(images, maps, units, title: str = ""):
    """One row per image: the image, then the maps of `units` (each row on one colour scale)."""
    from dlrun.plots.images import show

    n, k = len(images), maps.shape[-1]
    fig, axes = new_figure(n, k + 1, figsize=(1.2 * (k + 1), 1.3 * n + 0.5), squeeze=False)
    for r in range(n):
        show(axes[r, 0], images[r])
        top = float(maps[r].max()) or 1.0
        for c in range(k):
            axes[r, c + 1].imshow(maps[r, ..., c], cmap="viridis", vmin=0.0, vmax=top, interpolation="nearest")
            if r == 0:
                axes[r, c + 1].set_title(f"unit {units[c]}", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def embedding_scatter(points, labels, class_names, title: str = ""):
    """2-D points coloured by class index, with a legend of class names."""
    import matplotlib

    fig, ax = new_figure(figsize=(6.5, 5.5))
    labels = np.asarray(labels)
    cmap = matplotlib.colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for k, name in enumerate(class_names):
        mine = labels == k
        if mine.any():
            ax.scatter(points[mine, 0], points[mine, 1], s=8, color=cmap(k % cmap.N), label=str(name))
    ax.set_xticks([])
    ax.set_yticks([])
    if len(class_names) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def attack_curve(eps: list[float], curves: dict[str, list[float]], clean: float, metric: str = "accuracy"):
    """The metric against the budget eps, one line per attack, starting at the clean value (eps 0)."""
    fig, ax = new_figure(figsize=(5.5, 4))
    for name, values in curves.items():
        ax.plot([0.0, *eps], [clean, *values], marker="o", label=name)
    ax.set_xlabel("eps (L-inf budget, [0, 1] pixel units)")
    ax.set_ylabel(metric)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{metric} under attack")
    fig.tight_layout()
    return fig
