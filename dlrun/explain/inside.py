"""What the network learned (the course's visualisation lesson):

    filters      the first layer's kernels as small images (an MLP's first Dense weights too)
    activations  a layer's maps for a few images, the most active units first
    top_images   for chosen units of a layer, the test images that excite them most (by default
                 the last convolutional layer; an MLP's penultimate units)
    tsne         the penultimate-layer codes of the test images in 2-D (scikit-learn's t-SNE),
                 coloured by class
"""

from __future__ import annotations

import numpy as np

from dlrun.contract import Report
from dlrun.errors import DlrunError
from dlrun.explain import EXPLAINERS

MAX_FILTERS = 64


def _chosen_units(units, strength, n_units: int) -> list[int]:
    """units=N: the N units with the highest mean `strength`; units=[a, b]: those (checked)."""
    if isinstance(units, list):
        bad = [u for u in units if u >= n_units]
        if bad:
            raise DlrunError(f"units: {bad[0]} is not a unit of this layer", f"it has units 0-{n_units - 1}")
        return units
    return [int(u) for u in np.argsort(-np.asarray(strength), kind="stable")[:units]]


@EXPLAINERS.register("filters", "The first layer's learned kernels (or an MLP's first weights) as images")
def filters(lens, x, targets, opts) -> Report:
    from dlrun.plots.images import image_grid

    path, layer = lens.first_weights() if opts.layer == "auto" else _weights_layer(lens, opts.layer)
    kernel = np.asarray(layer.get_weights()[0])
    if kernel.ndim == 2:  # Dense on flattened pixels: each unit's weights are an image
        shape = tuple(int(d) for d in lens.network.input.shape[1:])
        if int(np.prod(shape)) != kernel.shape[0]:
            raise DlrunError(f"layer '{path}' does not read pixels: its weights are not images",
                             "filters shows the first convolution or dense layer on the image")
        pictures = np.moveaxis(kernel.reshape(*shape, -1), -1, 0)
    else:  # (kh, kw, in, out [...]): one picture per output channel
        pictures = np.moveaxis(kernel.reshape(*kernel.shape[:3], -1), -1, 0)
        if pictures.shape[-1] not in (1, 3):  # not image channels: show their mean
            pictures = pictures.mean(axis=-1, keepdims=True)
    if pictures.ndim == 3:
        pictures = pictures[..., None]
    ids = opts.units if isinstance(opts.units, list) else list(range(min(len(pictures), MAX_FILTERS)))
    if ids and max(ids) >= len(pictures):
        raise DlrunError(f"units: {max(ids)} is not a filter of '{path}'", f"it has filters 0-{len(pictures) - 1}")
    low = pictures.min(axis=(1, 2, 3), keepdims=True)
    span = pictures.max(axis=(1, 2, 3), keepdims=True) - low
    shown = ((pictures - low) / np.where(span > 0, span, 1.0))[ids]
    h, w = pictures.shape[1:3]
    figure = image_grid(shown, [str(i) for i in ids], f"{path}: {len(ids)} of {len(pictures)} filters ({h}x{w}), "
                        "each scaled to its own range", cols=min(8, len(ids)))
    return Report(figures={"filters/filters.png": figure})


def _weights_layer(lens, path: str):
    """(path, layer) for a layer named by the user (through nested models)."""
    model, layer = lens.network, None
    for part in path.split("/"):
        names = [lay.name for lay in model.layers]
        if part not in names:
            from dlrun.errors import did_you_mean

            raise DlrunError(f"layer '{path}': no such layer in '{model.name}'", did_you_mean(part, names))
        layer = model = model.get_layer(part)
    if not layer.get_weights():
        raise DlrunError(f"layer '{path}' has no weights to show")
    return path, layer


@EXPLAINERS.register("activations", "A layer's activation maps for a few images (the most active units)")
def activations(lens, x, targets, opts) -> Report:
    from dlrun.plots.explain import activation_grid

    path = lens.first_weights()[0] if opts.layer == "auto" else opts.layer
    shown = x[:min(len(x), opts.images, 4)]
    maps = lens.activations(shown, path, opts.batch_size)
    if maps.ndim != 4:
        raise DlrunError(f"layer '{path}' gives a vector, not maps", "activations needs a convolutional layer; "
                         "method=top_images and method=tsne take dense layers")
    units = _chosen_units(opts.units, maps.mean(axis=(0, 1, 2)), maps.shape[-1])
    figure = activation_grid(shown, maps[..., units], units, f"{path}: activation maps of {len(units)} of "
                             f"{maps.shape[-1]} units")
    return Report(figures={f"activations/{path.replace('/', '_')}.png": figure})


@EXPLAINERS.register("top_images", "The test images that activate chosen units of a layer most")
def top_images(lens, x, targets, opts) -> Report:
    from dlrun.plots.images import image_grid

    pool = x[:opts.examples]
    if opts.layer == "auto" and not lens.map_layers():  # an MLP: the units of the penultimate code
        path = f"{lens.codes_layer().name}_input"
        acts = lens.codes(pool, opts.batch_size)
    else:
        path = lens.last_conv() if opts.layer == "auto" else opts.layer
        acts = lens.activations(pool, path, opts.batch_size)
    strength = acts.reshape(len(acts), -1, acts.shape[-1]).max(axis=1)  # a unit's strongest response per image
    units = _chosen_units(opts.units, strength.mean(axis=0), strength.shape[-1])
    per = min(opts.per_unit, len(pool))
    pictures, titles, rows = [], [], []
    for u in units:
        best = np.argsort(-strength[:, u], kind="stable")[:per]
        pictures += list(pool[best])
        titles += [f"unit {u}: {strength[i, u]:.2f}" for i in best]
        rows.append({"unit": u, "images": " ".join(str(int(i)) for i in best),
                     "top_activation": float(strength[best[0], u]), "mean_activation": float(strength[:, u].mean())})
    figure = image_grid(np.asarray(pictures), titles, f"{path}: the {per} of {len(pool)} images that excite "
                        f"each unit most (its largest response)", cols=per)
    return Report(tables={"top_images": rows}, figures={f"top_images/{path.replace('/', '_')}.png": figure})


@EXPLAINERS.register("tsne", "t-SNE of the penultimate-layer codes, coloured by class")
def tsne(lens, x, targets, opts) -> Report:
    from sklearn.manifold import TSNE

    from dlrun.plots.explain import embedding_scatter

    pool = x[:opts.examples]
    if len(pool) < 4:
        raise DlrunError(f"tsne needs at least 4 images, got {len(pool)}")
    codes = lens.codes(pool, opts.batch_size)
    truth = targets is not None
    labels = np.asarray(targets[:len(pool)]) if truth else lens.answers(lens.predict(pool, opts.batch_size))
    perplexity = min(float(opts.perplexity), (len(pool) - 1) / 3.0)
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=int(opts.seed)).fit_transform(codes)
    layer = lens.codes_layer().name
    figure = embedding_scatter(points, labels, lens.class_names,
                               f"t-SNE of {codes.shape[1]}-d codes (input of '{layer}'), {len(pool)} images, "
                               f"{'true' if truth else 'predicted'} class")
    return Report(figures={"tsne/tsne.png": figure})
