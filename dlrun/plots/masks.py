"""Segmentation figures: images beside their true and predicted masks."""

from __future__ import annotations

from dlrun.plots import new_figure


def mask_grid(images, truths, preds, class_names, notes=None, title: str = ""):
    """One row per image: the image, the true mask over it, the predicted mask over it (class
    colours as in the mask PNGs dlrun writes), a note per row (e.g. its IoU), a colour legend."""
    import numpy as np
    from matplotlib.patches import Patch

    from dlrun.data.masks import overlay, palette

    n, k = len(images), len(class_names)
    if n == 0:
        fig, ax = new_figure(figsize=(4, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no images", ha="center", va="center")
        return fig
    fig, axes = new_figure(n, 3, figsize=(6.6, 2.2 * n + 0.6), squeeze=False)
    for i in range(n):
        panels = (np.asarray(images[i]), overlay(images[i], truths[i], k, alpha=0.85, dim=0.45),
                  overlay(images[i], preds[i], k, alpha=0.85, dim=0.45))
        for j, (ax, pic) in enumerate(zip(axes[i], panels, strict=True)):
            ax.axis("off")
            pic = pic.astype("float32") / 255.0 if pic.dtype == np.uint8 or pic.max() > 1 else pic
            ax.imshow(pic[..., 0] if pic.shape[-1] == 1 else pic, cmap="gray" if pic.shape[-1] == 1 else None,
                      vmin=0.0, vmax=1.0, interpolation="nearest")
            if i == 0:
                ax.set_title(("image", "truth", "prediction")[j], fontsize=9)
        if notes:
            axes[i][0].text(-0.05, 0.5, notes[i], transform=axes[i][0].transAxes, rotation=90, va="center",
                            ha="right", fontsize=8)
    colours = palette(k).astype("float32") / 255.0
    fig.legend(handles=[Patch(color=colours[c], label=str(name)) for c, name in enumerate(class_names) if c > 0],
               loc="lower center", ncol=min(k, 6), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
