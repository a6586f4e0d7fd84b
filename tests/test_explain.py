"""`dlrun explain` (issue 22): heat maps that point at what decides the class, a deletion test
with known numbers, and the command on a logged digits run (figures and metrics under explain/,
the run's test metrics and status untouched)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import stderr_line

from dlrun.errors import DlrunError


def options(**given):
    from dlrun.explain.options import read

    return read("explain", {k: str(v) for k, v in given.items()})


def served_classifier(network, class_names, scale=1.0):
    """A served model as the image task builds it: raw pixels -> (resize) -> rescale -> network."""
    import keras

    from dlrun.contract import Served

    raw = keras.Input(shape=(None, None, network.input.shape[-1]), name="image")
    size = tuple(network.input.shape[1:3])
    x = keras.layers.Rescaling(scale, name="rescale")(keras.layers.Resizing(*size, name="resize")(raw))
    model = keras.Model(raw, {"probability": network(x)}, name=f"served_{network.name}")
    return Served(model, output_columns={"probability": list(class_names)}, meta={"scale": scale})


# -- a model whose answer is known: a bright 3x3 square decides the class ------------------

SIDE = 12


def square_detector():
    """Conv 3x3 of ones with bias -5 (fires only where a window holds more than 5 units of light:
    the 3x3 square, never the one-pixel line or the dim noise) -> global mean -> 'square' logit."""
    import keras

    image = keras.Input((SIDE, SIDE, 1), name="image")
    conv = keras.layers.Conv2D(1, 3, padding="same", activation="relu", name="detector")
    maps = conv(image)
    conv.set_weights([np.ones((3, 3, 1, 1), "float32"), np.array([-5.0], "float32")])
    head = keras.layers.Dense(2, name="head")
    logits = head(keras.layers.GlobalAveragePooling2D(name="pool")(maps))
    head.set_weights([np.array([[0.0, 40.0]], "float32"), np.array([0.5, 0.0], "float32")])
    return keras.Model(image, keras.layers.Activation("softmax", name="output")(logits), name="detector_net")


def square_images(n=12, seed=0):
    """Dim noise, a bright one-pixel line (a distractor) and a bright 3x3 square; the square's centres."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.2, (n, SIDE, SIDE, 1)).astype("float32")
    centres = []
    for i in range(n):
        r, c = rng.integers(1, SIDE - 1, size=2)
        line = (r + 5) % (SIDE - 2) + 1  # a row away from the square
        x[i, line, 1:7, 0] = 1.0
        x[i, r - 1:r + 2, c - 1:c + 2, 0] = 1.0
        centres.append((r, c))
    return x, np.array(centres)


@pytest.mark.parametrize("method", ["gradcam", "saliency", "occlusion"])
def test_heat_maps_peak_on_the_square_that_decides_the_class(method):
    from dlrun.explain import heatmaps
    from dlrun.explain.lens import Lens

    lens = Lens(served_classifier(square_detector(), ["none", "square"]))
    x, centres = square_images()
    probabilities = lens.predict(x)
    assert (probabilities.argmax(1) == 1).all()  # the square is seen in every image
    make = {"gradcam": heatmaps.gradcam_maps, "saliency": heatmaps.saliency_maps,
            "occlusion": heatmaps.occlusion_maps}[method]
    maps = make(lens, x, np.ones(len(x), "int64"), options(patch=0.17, stride=0.09))  # 2-pixel squares, 1-pixel steps
    assert maps.shape == (len(x), SIDE, SIDE) and maps.max() == pytest.approx(1.0)
    peaks = np.array([np.unravel_index(m.argmax(), m.shape) for m in maps])
    assert np.abs(peaks - centres).max() <= 1, (peaks, centres)  # on the square, never on the line


def test_gradcam_picks_the_last_convolutional_layer_and_names_the_valid_ones():
    from dlrun.explain import heatmaps
    from dlrun.explain.lens import Lens

    lens = Lens(served_classifier(square_detector(), ["none", "square"]))
    assert lens.last_conv() == "detector" and lens.map_layers() == ["detector"]
    with pytest.raises(DlrunError, match="layer 'pool' has no 2-D maps.*layers with maps: detector"):
        heatmaps.gradcam_maps(lens, square_images(2)[0], np.ones(2, "int64"), options(layer="pool"))


def test_layers_inside_a_nested_base_are_reachable_and_the_lens_agrees_with_the_served_model():
    """A keras_app-like network: a frozen 1x1 preprocessing conv, then a nested base model."""
    import keras

    from dlrun.explain import heatmaps
    from dlrun.explain.lens import Lens

    base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 1, name="pointwise"),
                             keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="spatial")], name="base")
    image = keras.Input((8, 8, 1), name="image")
    features = base(keras.layers.Conv2D(3, 1, trainable=False, name="app_preprocess")(image))
    logits = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D(name="pool")(features))
    network = keras.Model(image, keras.layers.Activation("softmax", name="output")(logits), name="app")
    lens = Lens(served_classifier(network, ["a", "b", "c"], scale=1 / 16))
    assert lens.first_weights()[0] == "base/spatial"  # 1x1 convolutions are no filters to look at
    assert lens.last_conv() == "base" and lens.logits
    x = np.random.default_rng(0).uniform(0, 1, (5, 8, 8, 1)).astype("float32")
    assert lens.activations(x, "base/spatial", 2).shape == (5, 8, 8, 5)
    assert heatmaps.gradcam_maps(lens, x, np.zeros(5, "int64"), options()).shape == (5, 8, 8)
    # the differentiable path and the served model (raw pixels = x / scale) give the same answers
    assert np.allclose(np.asarray(keras.ops.softmax(lens.forward(x))), lens.predict(x), atol=1e-5)


# -- the deletion test on fixed cases --------------------------------------------------------


def linear_lens(weights):
    """p(class 1) = sigmoid(sum of weights * pixels) on 4x4 images (class 0's logit is 0)."""
    import keras

    from dlrun.explain.lens import Lens

    image = keras.Input((4, 4, 1), name="image")
    head = keras.layers.Dense(2, name="head")
    logits = head(keras.layers.Flatten(name="flatten")(image))
    head.set_weights([np.stack([np.zeros(16), np.ravel(weights)], axis=1).astype("float32"), np.zeros(2, "float32")])
    network = keras.Model(image, keras.layers.Activation("softmax", name="output")(logits), name="linear")
    return Lens(served_classifier(network, ["off", "on"]))


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_deletion_test_numbers_on_fixed_cases():
    from dlrun.explain.heatmaps import deletion_test

    x = np.ones((256, 4, 4, 1), "float32")
    on = np.ones(256, "int64")
    # one pixel carries the whole score (weight 4): the map that points at it deletes all of it
    weights = np.zeros((4, 4))
    weights[0, 0] = 4.0
    pointing = np.zeros((256, 4, 4))
    pointing[:, 0, 0] = 1.0
    drop, random_drop = deletion_test(linear_lens(weights), x, on, pointing, fraction=1 / 16, fill=0.0, seed=0)
    assert drop == pytest.approx(sigmoid(4) - 0.5, abs=1e-5)  # 0.48201
    # one random pixel of 16 hits it 1 time in 16: 0.0301 expected, binomial sd 0.007
    assert random_drop == pytest.approx((sigmoid(4) - 0.5) / 16, abs=0.025)
    # every pixel counts the same (0.25 each): deleting any 4 of 16 costs the same, map or random
    drop, random_drop = deletion_test(linear_lens(np.full((4, 4), 0.25)), x[:8], on[:8], pointing[:8],
                                      fraction=0.25, fill=0.0, seed=0)
    assert drop == pytest.approx(sigmoid(4) - sigmoid(3), abs=1e-5) and random_drop == pytest.approx(drop, abs=1e-6)


# -- the command on a logged run (the session's shared trainer=smoke digits CNN) ------------


def test_explain_logs_every_method_to_the_run_without_touching_it(shared_run):
    shared = shared_run("cnn")
    run_id, client = shared.run.info.run_id, shared.client
    before = client.get_run(run_id)
    methods = "gradcam,saliency,occlusion,filters,activations,top_images,tsne"
    shared.run_dlrun("explain", f"run_id={run_id}", f"method={methods}", "images=4", "deletion_images=24",
                     "examples=40", "units=3", "per_unit=2", "output=seen")
    after = client.get_run(run_id)
    assert after.info.status == before.info.status == "FINISHED"
    assert {k: v for k, v in after.data.metrics.items() if k.startswith("test/")} == \
        {k: v for k, v in before.data.metrics.items() if k.startswith("test/")}
    m = after.data.metrics
    for method in ("gradcam", "saliency", "occlusion", "random"):
        assert -1.0 <= m[f"explain/{method}/deletion_drop"] <= 1.0
    figures = {"gradcam/heatmaps.png", "saliency/heatmaps.png", "occlusion/heatmaps.png", "filters/filters.png",
               "activations/block0_conv0.png", "top_images/block1_conv0.png", "tsne/tsne.png"}
    logged = {f"{d.path}/{f.path.rsplit('/', 1)[1]}" for d in client.list_artifacts(run_id, "explain")
              for f in client.list_artifacts(run_id, d.path) if not f.is_dir}
    assert {f"explain/{f}" for f in figures} <= logged
    assert all((shared.workdir / "seen" / f).is_file() for f in figures)
    rows = json.loads((shared.workdir / "seen" / "top_images.json").read_text())
    assert len(rows) == 3 and all(len(r["images"].split()) == 2 for r in rows)


def test_explain_and_attack_take_image_files(shared_run):
    """input= a folder of 0-255 PNGs (sub-folders named after classes): read at the run's size
    and pixel scale; attack needs those labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    shared = shared_run("cnn")
    run_id, tmp = shared.run.info.run_id, shared.workdir
    digits = load_digits()
    for i in range(3):
        folder = tmp / "photos" / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 255 / 16).astype("uint8")).resize((24, 24)).save(folder / f"{i}.png")
    shared.run_dlrun("explain", f"run_id={run_id}", "method=saliency", "input=photos", "deletion_images=3",
                     "output=mine")
    assert (tmp / "mine" / "saliency" / "heatmaps.png").is_file()
    shared.run_dlrun("attack", f"run_id={run_id}", "method=fgsm", "eps=0.1", "input=photos", "output=mine")
    (tmp / "unlabelled").mkdir(exist_ok=True)
    Image.fromarray((digits.images[0] * 16).astype("uint8")).save(tmp / "unlabelled" / "a.png")
    proc = shared.run_dlrun("attack", f"run_id={run_id}", "input=unlabelled", expect=2)
    assert "'unlabelled': no true classes to attack" in stderr_line(proc)


@pytest.mark.parametrize(("args", "needle"), [
    (["method=gradcm"], "unknown explain method 'gradcm' (did you mean 'gradcam'? valid: activations, filters"),
    (["metod=gradcam"], "dlrun explain: unknown argument 'metod' (did you mean 'method'?"),
    (["images=many"], "images: 'many' is not a number"),
    (["fraction=1.5"], "fraction: must lie in (0, 1], got 1.5"),
    (["units=a,b"], "units: 'a,b' is neither a count nor a list"),
])
def test_explain_options_are_one_line_errors_before_any_run_is_read(run_dlrun, args, needle):
    assert needle in stderr_line(run_dlrun("explain", "run_id=not-a-run", *args, expect=2))


def test_explain_run_errors_name_the_fix(shared_run, run_dlrun):
    shared = shared_run("cnn")
    run_id = shared.run.info.run_id
    proc = shared.run_dlrun("explain", f"run_id={run_id}", "method=activations", "layer=flat", expect=2)
    assert "no such layer in 'cnn' (did you mean 'flatten'?" in stderr_line(proc)
    proc = shared.run_dlrun("explain", f"run_id={run_id}", "target=eleven", expect=2)
    assert "target 'eleven' is not a class of this run" in stderr_line(proc)
    assert "dlrun explain needs a run" in stderr_line(run_dlrun("explain", "method=tsne", expect=2))


def test_tasks_without_a_lens_say_so():
    from dlrun.registry import TASKS

    with pytest.raises(DlrunError, match="task 'tabular' cannot be explained or attacked"):
        TASKS.get("tabular")().lens(None, None)
