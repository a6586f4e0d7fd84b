"""Detection figures: test images with predicted and true boxes; precision-recall per class."""

from __future__ import annotations

import numpy as np


def detections_grid(images, predictions, truths, class_names, cols: int = 4, min_score: float = 0.3):
    """Images with true boxes (green, dashed) and predictions >= min_score (red, class and score)."""
    from matplotlib.patches import Rectangle

    from dlrun.plots import new_figure

    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    fig, axes = new_figure(rows, cols, figsize=(3.2 * cols, 3.3 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(np.asarray(images[i]).astype("uint8"), interpolation="nearest")
        for b in np.asarray(truths[i]["boxes"]).reshape(-1, 4):
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="lime", lw=1.2, ls="--"))
        p = predictions[i]
        for b, c, s in zip(p["boxes"], p["labels"], p["scores"], strict=False):
            if s < min_score:
                continue
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="red", lw=1.2))
            name = class_names[int(c)] if int(c) < len(class_names) else str(c)
            ax.text(b[0], b[1], f"{name} {s:.2f}", color="white", fontsize=6, va="bottom",
                    bbox={"facecolor": "red", "alpha": 0.6, "pad": 0.5, "lw": 0})
    fig.suptitle(f"test detections: red = predicted (score >= {min_score:.1f}), green dashed = true", fontsize=9)
    fig.tight_layout()
    return fig


def pr_curves(curves: dict):
    """Precision against recall at IoU 0.5, one line per class (from COCOeval)."""
    from dlrun.plots import new_figure

    fig, ax = new_figure(figsize=(5, 4))
    for name, (recall, precision) in curves.items():
        precision = np.asarray(precision)
        if (precision > -1).any():
            ax.plot(recall, np.where(precision < 0, np.nan, precision), label=str(name))
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall per class (IoU 0.5)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
