"""A served model seen from inside: everything `dlrun explain` and `dlrun attack` ask of a task.

A task returns a Lens from `Task.lens(cfg, served)`; the methods, the attacks and the adversarial
examples talk to nothing else. Images enter in [0, 1] units: the served model's raw pixels times
the `scale` the run logged (digits: 0-16 -> /16; image files: 0-255 -> /255). Budgets (eps) and
fill values are in those units.

This class is the image classifier's lens. Its first half (finding the network and its layers,
forward passes, activations, codes) fits any served model that is "resize -> rescale -> one
trained Keras network -> answers"; its second half (`encode` ... `titles`) is what a task of
another kind overrides: a segmentation lens would read masks as targets, average the per-pixel
loss, score with mean IoU and explain the summed score of a class over its pixels.
"""

from __future__ import annotations

import numpy as np

from dlrun.errors import DlrunError, did_you_mean


class Lens:
    """The image classifier behind a served model: probabilities of each class for an image."""

    metric = "accuracy"  # what `measure` returns (attack/<method>/eps_<e>/<metric>)
    unsupported: tuple[str, ...] = ()  # explain/attack methods that make no sense for this kind of task

    def __init__(self, served):
        import keras

        nested = [layer for layer in served.model.layers if isinstance(layer, keras.Model)]
        if len(nested) != 1:
            raise DlrunError(f"cannot find the trained network inside served model '{served.model.name}'",
                             "dlrun explain/attack take runs whose served model wraps one network")
        self.served, self.network = served, nested[0]
        self.resize = next((lay for lay in served.model.layers if isinstance(lay, keras.layers.Resizing)), None)
        self.scale = float((served.meta or {}).get("scale", 1 / 255))
        self.class_names = [str(c) for c in served.output_columns.get("probability", [])]
        self._probes: dict = {}
        self._taps: dict = {}

    # -- the network and its layers ------------------------------------------------------
    def network_input(self, x):
        """Images in [0, 1] units at their own size -> what the network takes (the served model's
        own Resizing layer; resizing and rescaling commute, both are linear)."""
        return self.resize(x) if self.resize is not None else x

    def forward(self, x):
        """Class scores for images in [0, 1] units, differentiable (Keras ops): the logits where
        the network ends in a softmax (`self.logits`), else its outputs."""
        return self.probe()(self.network_input(x), training=False)[0]

    @property
    def logits(self) -> bool:
        return self._scores_tensor() is not self.network.output

    def probe(self, layers: tuple[str, ...] = ()):
        """A Keras model: network input -> [output of each top-level layer in `layers`, class
        scores, probabilities]. Class scores are the logits (the input of the softmax) where the
        network ends in one, so a confident answer still has gradients."""
        key = tuple(layers)
        if key not in self._probes:
            import keras

            taps = [_output(self.layer(name)) for name in layers]
            self._probes[key] = keras.Model(self.network.input, [*taps, self._scores_tensor(), self.network.output])
        return self._probes[key]

    def _scores_tensor(self):
        last = self.network.layers[-1]
        activation = getattr(last, "activation", None)
        if type(last).__name__ == "Activation" and getattr(activation, "__name__", "") == "softmax":
            return _input(last)
        return self.network.output

    def layer(self, name: str):
        """A top-level layer of the network by name (a one-line error listing those with maps)."""
        names = [layer.name for layer in self.network.layers]
        if name not in names:
            raise DlrunError(f"layer '{name}': no such layer in network '{self.network.name}'",
                             did_you_mean(name, self.map_layers() or names))
        return self.network.get_layer(name)

    def map_layers(self) -> list[str]:
        """Top-level layers whose output is a stack of 2-D maps (batch, height, width, channels)."""
        return [layer.name for layer in self.network.layers[1:] if len(_output(layer).shape) == 4]

    def last_conv(self) -> str:
        """The last layer with maps before the head (pooling and dropout skipped): Grad-CAM's layer."""
        names = self.map_layers()
        while names and any(k in type(self.network.get_layer(names[-1])).__name__ for k in ("Pool", "Dropout")):
            names.pop()
        if not names:
            raise DlrunError(f"network '{self.network.name}' has no convolutional layer",
                             "Grad-CAM and unit maps need one: use method=saliency or method=occlusion")
        return names[-1]

    def first_weights(self) -> tuple[str, object]:
        """(path, layer) of the first layer with learned spatial kernels (Conv2D with a kernel
        larger than 1x1, searched through nested models), else the first Dense layer (an MLP
        on pixels: its weights are images too)."""
        import keras

        convs = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
        found = _first(self.network, lambda lay: isinstance(lay, convs) and tuple(lay.kernel_size) != (1, 1))
        found = found or _first(self.network, lambda lay: isinstance(lay, keras.layers.Dense))
        if found is None:
            raise DlrunError(f"network '{self.network.name}' has no convolution or dense layer to show")
        return found

    def tap(self, path: str):
        """x (network input) -> the output of the layer at `path` ('name' or 'outer/inner' for a
        layer inside a nested model such as a keras.applications base)."""
        if path not in self._taps:
            self._taps[path] = _tap(self.network, path)
        return self._taps[path]

    def codes_layer(self):
        """The last layer with weights (the head): its input is the penultimate-layer code."""
        for layer in reversed(self.network.layers):
            if layer.weights and not isinstance(_output(layer), list):
                return layer
        raise DlrunError(f"network '{self.network.name}' has no layer with weights")

    def codes(self, x, batch_size: int):
        """Penultimate-layer codes (the head's input), one row per image in [0, 1] units."""
        import keras

        key = ("__codes__",)
        if key not in self._probes:
            self._probes[key] = keras.Model(self.network.input, _input(self.codes_layer()))
        model = self._probes[key]
        return _batched(lambda b: model(self.network_input(b), training=False), x, batch_size).reshape(len(x), -1)

    def activations(self, x, path: str, batch_size: int):
        """The output of the layer at `path` for images in [0, 1] units (numpy)."""
        fn = self.tap(path)
        return _batched(lambda b: fn(self.network_input(b)), x, batch_size)

    def predict(self, x, batch_size: int = 128):
        """Probabilities from the served model itself (raw pixels in: x / scale), numpy."""
        model = self.served.model
        return _batched(lambda b: model(b / self.scale, training=False)["probability"], x, batch_size)

    # -- what another kind of task overrides ----------------------------------------------
    def encode(self, targets):
        """The true answers as the user has them (class names) -> class indices."""
        index = {n: i for i, n in enumerate(self.class_names)}
        unknown = sorted({str(t) for t in targets if str(t) not in index})
        if unknown:
            raise DlrunError(f"labels {', '.join(unknown[:5])} are not classes of this run",
                             did_you_mean(unknown[0], self.class_names))
        return np.asarray([index[str(t)] for t in targets], dtype="int64")

    def loss(self, scores, targets):
        """Per-example loss the attacks ascend: cross-entropy of the class scores (`forward`) with
        the true class (from the logits: no clipping of confident probabilities, no flat gradients)."""
        import keras

        return keras.losses.sparse_categorical_crossentropy(targets, scores, from_logits=self.logits)

    def log_probability(self, scores, classes):
        """Per-example log p(class) from the class scores (what fooling images raise)."""
        import keras

        logp = keras.ops.log_softmax(scores, axis=-1) if self.logits else keras.ops.log(scores + 1e-12)
        return self.explained(logp, classes)

    def answers(self, probabilities):
        """Answers (numpy) from probabilities: the most probable class."""
        return np.asarray(probabilities).argmax(axis=-1)

    def measure(self, answers, targets) -> float:
        """The score under attack (`metric`): accuracy."""
        return float(np.mean(np.asarray(answers) == np.asarray(targets)))

    def correct(self, answers, targets):
        """Per example: is the answer right (numpy booleans; red or black in the figures)."""
        return np.asarray(answers) == np.asarray(targets)

    def explained(self, scores, classes):
        """Per-example scalar a heat map explains: the score of the class in `classes`."""
        import keras

        return keras.ops.take_along_axis(scores, keras.ops.expand_dims(classes, -1), axis=-1)[:, 0]

    def confidence(self, probabilities, classes):
        """Per-example probability of the class in `classes` (numpy): what the deletion test drops."""
        p = np.asarray(probabilities)
        return p[np.arange(len(p)), np.asarray(classes)]

    def classes(self, which: str, probabilities, targets=None):
        """The class each heat map explains: `predicted`, `true` or a class name."""
        if which == "predicted":
            return self.answers(probabilities)
        if which == "true":
            if targets is None:
                raise DlrunError("target=true needs true labels",
                                 "these images have none: use target=predicted or a class name")
            return np.asarray(targets)
        if which not in self.class_names:
            raise DlrunError(f"target '{which}' is not a class of this run",
                             did_you_mean(which, ["predicted", "true", *self.class_names]))
        return np.full(len(probabilities), self.class_names.index(which), dtype="int64")

    def picture(self, image, answer):
        """What an attack's grid shows for an image and the answer to it: the image itself."""
        return image

    def titles(self, answers, probabilities=None) -> list[str]:
        """A short caption per image: the answer (and its probability)."""
        names = self.class_names
        if probabilities is None:
            return [names[int(a)] for a in answers]
        p = np.asarray(probabilities)
        return [f"{names[int(a)]} {p[i, int(a)]:.2f}" for i, a in enumerate(answers)]


# -- graph helpers ------------------------------------------------------------------------


def _output(layer):
    """The tensor `layer` produces in the graph of the model that calls it. Keras 3 has no public
    get_output_at, and a nested model's `.output` is its own graph's output, so a nested model's
    one call node is read instead."""
    import keras

    return layer._inbound_nodes[0].output_tensors[0] if isinstance(layer, keras.Model) else layer.output


def _input(layer):
    """The tensor fed to `layer` in its parent's graph (see _output)."""
    import keras

    return layer._inbound_nodes[0].input_tensors[0] if isinstance(layer, keras.Model) else layer.input


def _first(model, wanted, prefix: str = ""):
    """(path, layer) of the first layer, depth first through nested models, for which wanted(layer)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found = _first(layer, wanted, f"{prefix}{layer.name}/")
            if found:
                return found
        elif wanted(layer):
            return f"{prefix}{layer.name}", layer
    return None


def _tap(model, path: str):
    """A function: input of `model` -> output of the layer at `path` (through nested models)."""
    import keras

    head, _, rest = path.partition("/")
    names = [layer.name for layer in model.layers]
    if head not in names:
        raise DlrunError(f"layer '{path}': no such layer in '{model.name}'", did_you_mean(head, names))
    layer = model.get_layer(head)
    start = model.inputs[0]  # the graph's own input (a Sequential's `.input` is that of its call)
    if not rest:
        return keras.Model(start, _output(layer))
    if not isinstance(layer, keras.Model):
        raise DlrunError(f"layer '{path}': '{head}' is not a nested model")
    front, inner = keras.Model(start, _input(layer)), _tap(layer, rest)
    return lambda x: inner(front(x))


def _batched(fn, x, batch_size: int):
    """fn over `x` in batches, results concatenated (numpy)."""
    x = np.asarray(x, dtype="float32")
    parts = [np.asarray(fn(x[i:i + batch_size])) for i in range(0, len(x), max(1, int(batch_size)))]
    return np.concatenate(parts) if parts else np.zeros((0,))
