"""The autoencoder task's report parts: the outlier threshold chosen on validation, the outlier
metrics, the scikit-learn baselines scored the same way, and the figures (reconstruction grids,
VAE samples and latent walk, latent scatter, score histogram, ROC and precision-recall)."""

from __future__ import annotations

import numpy as np

from dlrun.errors import DlrunError

THRESHOLD_METRICS = ("accuracy", "f1")


def choose_threshold(scores, labels, metric: str = "f1") -> tuple[float, float]:
    """(threshold, value): flag score > threshold; the candidate (midpoints of sorted unique
    scores, plus 'flag nothing') that maximises `metric` on labelled scores."""
    from sklearn.metrics import accuracy_score, f1_score

    if metric not in THRESHOLD_METRICS:
        raise DlrunError(f"task.threshold_metric: unknown '{metric}'", f"valid: {', '.join(THRESHOLD_METRICS)}")
    s, y = np.asarray(scores, "float64"), np.asarray(labels).astype(int)
    u = np.unique(s)
    candidates = np.concatenate([(u[:-1] + u[1:]) / 2, [u[-1]]]) if len(u) > 1 else u
    fn = (lambda t, p: accuracy_score(t, p)) if metric == "accuracy" else (lambda t, p: f1_score(t, p, zero_division=0))
    best_t, best_v = float(candidates[-1]), -1.0
    for t in candidates:
        v = fn(y, (s > t).astype(int))
        if v > best_v:
            best_t, best_v = float(t), float(v)
    return best_t, best_v


def outlier_metrics(scores, labels, threshold: float) -> dict:
    """Precision/recall/F1 per class, accuracy, ROC AUC, PR AUC of `score > threshold`."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y, s = np.asarray(labels).astype(int), np.asarray(scores, "float64")
    pred = (s > threshold).astype(int)
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0)
    out = {"accuracy": float(accuracy_score(y, pred)), "threshold": float(threshold)}
    for i, name in enumerate(("normal", "anomaly")):
        out[f"precision_{name}"], out[f"recall_{name}"], out[f"f1_{name}"] = float(p[i]), float(r[i]), float(f[i])
    out["f1"] = out["f1_anomaly"]
    if len(np.unique(y)) == 2:
        out["roc_auc"] = float(roc_auc_score(y, s))
        out["pr_auc"] = float(average_precision_score(y, s))
    return out


def outlier_baselines(cfg, a: dict) -> dict[str, dict]:
    """IsolationForest and PCA reconstruction error, fitted on the same normal training rows,
    thresholds chosen on validation like the autoencoder's."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest

    flat = {s: a[f"x_{s}"].reshape(len(a[f"x_{s}"]), -1) for s in ("train", "val", "test")}
    seed, metric = int(cfg.task.split.seed), str(cfg.task.threshold_metric)
    out = {}
    for name in cfg.task.get("baselines") or []:
        if name == "zscore":  # the largest |z| in the example, z from the training mean and sd
            mu, sd = flat["train"].mean(axis=0), flat["train"].std(axis=0) + 1e-8
            score = {s: np.abs((flat[s] - mu) / sd).max(axis=1) for s in ("val", "test")}
        elif name == "isolation_forest":
            est = IsolationForest(n_estimators=200, random_state=seed).fit(flat["train"])
            score = {s: -est.score_samples(flat[s]) for s in ("val", "test")}
        elif name == "pca":
            k = min(int(cfg.model.get("latent_dim", 2)), flat["train"].shape[1], len(flat["train"]))
            pca = PCA(n_components=k, random_state=seed).fit(flat["train"])
            score = {s: np.mean((pca.inverse_transform(pca.transform(flat[s])) - flat[s]) ** 2, axis=1)
                     for s in ("val", "test")}
        else:
            raise DlrunError(f"task.baselines: unknown baseline '{name}'", "valid: isolation_forest, pca, zscore")
        t, _ = choose_threshold(score["val"], a["a_val"], metric)
        out[name] = outlier_metrics(score["test"], a["a_test"], t)
    return out


def grids(x, noisy, rec, n: int = 8) -> dict:
    from dlrun.plots.images import image_grid

    rows = [x[:n]] + ([noisy[:n]] if noisy is not None else []) + [rec[:n]]
    names = ["input"] + (["noisy"] if noisy is not None else []) + ["reconstruction"]
    titles = [nm for nm in names for _ in range(len(rows[0]))]
    return {"reconstructions.png": image_grid(np.concatenate(rows), titles, "input / noisy / reconstruction",
                                              cols=len(rows[0]))}


def vae_figures(decoder, seed: int, n: int = 8) -> dict:
    """Samples decoded from the prior N(0, I), and a walk over the first two latent axes."""
    from dlrun.plots.images import image_grid

    dim = int(decoder.input.shape[-1])
    z = np.random.default_rng(seed).normal(0, 1, (n * n, dim)).astype("float32")
    samples = decoder.predict(z, verbose=0)
    grid = np.linspace(-2, 2, n, dtype="float32")
    walk = np.zeros((n * n, dim), "float32")
    walk[:, 0] = np.repeat(grid, n)
    if dim > 1:
        walk[:, 1] = np.tile(grid, n)
    walked = decoder.predict(walk, verbose=0)
    return {"prior_samples.png": image_grid(samples, [""] * len(samples), "samples from the prior", cols=n),
            "latent_walk.png": image_grid(walked, [f"{a:.1f},{b:.1f}" for a, b in walk[:, :2]],
                                          "latent walk (z0 rows, z1 columns, others 0)", cols=n)}


def latent_scatter(model, x, labels, names):
    """2-D scatter of the latent codes (PCA when the latent has more than 2 dimensions)."""
    from dlrun.plots import new_figure

    z = model.get_layer("encoder").predict(x, verbose=0)
    z = z[0] if isinstance(z, list | tuple) else z  # VAE: the mean
    z = z.reshape(len(z), -1)
    if z.shape[1] > 2:
        from sklearn.decomposition import PCA

        z = PCA(2, random_state=0).fit_transform(z)
    elif z.shape[1] == 1:
        z = np.concatenate([z, np.zeros_like(z)], axis=1)
    fig, ax = new_figure(figsize=(5, 4.5))
    labels = np.asarray(labels) if labels is not None else np.zeros(len(z), int)
    for k in np.unique(labels):
        m = labels == k
        name = names[int(k)] if names is not None and int(k) < len(names) else str(k)
        ax.scatter(z[m, 0], z[m, 1], s=6, label=name)
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title("latent space" + (" (PCA)" if z.shape[1] == 2 else ""))
    fig.tight_layout()
    return fig


def outlier_figures(scores, labels, threshold) -> dict:
    from sklearn.metrics import precision_recall_curve, roc_curve

    from dlrun.plots import new_figure

    y = np.asarray(labels).astype(int)
    fig, ax = new_figure(figsize=(5.5, 3.5))
    bins = np.histogram_bin_edges(scores, bins=50)
    for k, name in ((0, "normal"), (1, "anomaly")):
        ax.hist(scores[y == k], bins=bins, alpha=0.6, label=name)
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("reconstruction error")
    ax.legend()
    fig.tight_layout()
    figs = {"score_histogram.png": fig}
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, scores)
        fig, ax = new_figure(figsize=(4, 4))
        ax.plot(fpr, tpr)
        ax.plot([0, 1], [0, 1], "k:")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC")
        figs["roc_curve.png"] = fig
        p, r, _ = precision_recall_curve(y, scores)
        fig, ax = new_figure(figsize=(4, 4))
        ax.plot(r, p)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("precision-recall")
        figs["pr_curve.png"] = fig
    return figs
