"""Image figures: grids of images with their true and predicted labels."""

from __future__ import annotations

from dlrun.plots import new_figure


def show(ax, image) -> None:
    """One image (H, W, C) in [0, 1] on `ax`; grayscale for one channel."""
    import numpy as np

    img = np.clip(np.asarray(image, dtype="float32"), 0.0, 1.0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")


def image_grid(images, titles, title: str = "", cols: int = 8, colors=None, maps=None):
    """A grid of images (N, H, W, C) in [0, 1], each with a small title; grayscale for one channel.
    `maps` (N, H, W) in [0, 1]: a heat map laid over each image, half transparent."""
    import numpy as np

    images = np.asarray(images)
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    fig, axes = new_figure(rows, cols, figsize=(1.6 * cols, 1.9 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        show(ax, images[i])
        if maps is not None:
            ax.imshow(maps[i], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
        ax.set_title(titles[i], fontsize=7, color=(colors[i] if colors else "black"))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def misclassified(images, y_true, y_pred, class_names=None, total: int | None = None, cols: int = 8):
    """Misclassified test images titled 'true -> predicted' (a note instead when there are none)."""
    names = list(class_names) if class_names else None

    def label(i):
        return names[int(i)] if names and int(i) < len(names) else str(int(i))

    if len(images) == 0:
        fig, ax = new_figure(figsize=(4, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        return fig
    titles = [f"true {label(t)}\npred {label(p)}" for t, p in zip(y_true, y_pred, strict=True)]
    shown = f"{len(images)} of {total}" if total and total > len(images) else f"{len(images)}"
    return image_grid(images, titles, title=f"Misclassified test images ({shown})", cols=cols,
                      colors=["darkred"] * len(images))
