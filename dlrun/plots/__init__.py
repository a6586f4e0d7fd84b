"""matplotlib figures returned to the tracker (never shown). The Agg backend is forced so
runs work on machines without a display. Task-family figures live in sibling modules."""

from __future__ import annotations


def new_figure(*args, **kwargs):
    """plt.subplots on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def close(figures: dict) -> None:
    """Free the figures of a report once they are logged (or not)."""
    if figures:
        import matplotlib.pyplot as plt

        for fig in figures.values():
            plt.close(fig)


def learning_curves(history: dict, unit: str = "epoch", steps=None):
    """Training vs validation curves per metric (loss, accuracy, ...) over epochs (or `unit`s
    at `steps`), from a Keras-style history (`x` training, `val_x` validation; MLflow-style
    `train/x`, `val/x` are read the same way, never as two training curves). A metric with only
    a validation series gets its own panel; points a series does not have (NaN: a custom loop
    validates every few rows) are skipped, not drawn as gaps."""
    import math

    history = {_keras_name(k): v for k, v in history.items()}
    skip = ("lr", "learning_rate", "seconds", "steps_per_second")  # schedules and timing, not learning
    names = [k for k in history if not k.startswith("val_") and k not in skip]
    names += [k[4:] for k in history if k.startswith("val_") and k[4:] not in history]
    cols = min(4, max(1, len(names)))
    rows = -(-max(1, len(names)) // cols)
    fig, axes = new_figure(rows, cols, figsize=(4.5 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if key in history:
                values = list(history[key])
                x = list(steps[:len(values)]) if steps else list(range(1, len(values) + 1))
                kept = [(a, v) for a, v in zip(x, values, strict=False) if v is not None and math.isfinite(v)]
                if kept:
                    ax.plot(*zip(*kept, strict=True), label=label, marker="." if len(kept) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel(unit)
        ax.legend()
    fig.tight_layout()
    return fig


def _keras_name(key: str) -> str:
    """train/x -> x, val/x -> val_x; Keras-style names unchanged."""
    if key.startswith("val/"):
        return f"val_{key[4:]}"
    return key[len("train/"):] if key.startswith("train/") else key


def confusion_matrix(cm, class_names=None, title: str = "Confusion matrix"):
    """Heat map of a confusion matrix with counts in the cells."""
    import numpy as np

    cm = np.asarray(cm)
    n = cm.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(n)]
    size = max(4.0, 0.45 * n + 2)
    fig, ax = new_figure(figsize=(size, size))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        thresh = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > thresh else "black", fontsize=8)
    fig.tight_layout()
    return fig
