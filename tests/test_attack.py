"""`dlrun attack` and adversarial training (issue 22): FGSM with eps 0 changes nothing, accuracy
falls as eps grows on a trained digits CNN, PGD is at least as strong as FGSM, fooling images
reach 99 % confidence, and `task.adversarial` trains on attacked examples yet serves the plain
network. That adversarial training raises FGSM accuracy at its eps is measured by
scripts/vision_explain_quality.py, which the slow tier runs (tests/test_quality.py)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import dlrun_inprocess, stderr_line, store_runs

from dlrun.errors import DlrunError


def dlrun(tmp: Path, *args):
    """`dlrun <args>` in process in folder `tmp` (its own store); fails the test on a non-zero exit."""
    proc = dlrun_inprocess(args, tmp)
    assert proc.returncode == 0, f"dlrun {' '.join(map(str, args))}: {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The course CNN on 8x8 digits, 6 epochs (about 0.96 test accuracy), attacked once with
    every method: (run id, store client, folder, the run before the attack, after it)."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("attack")
    dlrun(tmp, "train", "task=cnn", "trainer.epochs=6", "trainer.progress=false")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    (before,) = store_runs(client)
    run_id = before.info.run_id
    dlrun(tmp, "attack", f"run_id={run_id}", "method=fgsm,pgd,fooling", "eps=0,0.03,0.1,0.2", "grid=4",
          "examples=200")
    return run_id, client, tmp, before, client.get_run(run_id)


def test_fgsm_with_eps_zero_changes_nothing():
    import keras

    from dlrun.explain.attack import fgsm, pgd

    x = np.random.default_rng(0).uniform(0, 1, (5, 6, 6, 1)).astype("float32")
    w = keras.ops.convert_to_tensor(np.random.default_rng(1).normal(size=(6, 6, 1)).astype("float32"))

    def loss_of(z):
        return keras.ops.sum(z * w, axis=(1, 2, 3))

    assert np.array_equal(np.asarray(fgsm(loss_of, x, 0.0)), x)
    assert np.array_equal(np.asarray(pgd(loss_of, x, 0.0, steps=3, step_size=0.0)), x)
    # a linear loss: FGSM's step is eps along the weights' sign (where [0, 1] leaves room)
    moved = np.asarray(fgsm(loss_of, x, 0.1))
    expected = np.clip(x + 0.1 * np.sign(np.asarray(w))[None], 0, 1)
    assert np.allclose(moved, expected, atol=1e-6)


def test_accuracy_falls_as_eps_grows_and_pgd_is_at_least_as_strong(digits_run):
    *_, after = digits_run
    m = after.data.metrics
    clean = m["attack/clean/accuracy"]
    assert clean >= 0.9  # a trained network, not chance (0.1)
    for method in ("fgsm", "pgd"):
        curve = [m[f"attack/{method}/eps_{e}/accuracy"] for e in ("0", "0.03", "0.1", "0.2")]
        assert curve[0] == clean  # eps 0 changes nothing
        assert curve[0] > curve[1] > curve[2] > curve[3], (method, curve)
        assert curve[3] < 0.5 * clean
    for e in ("0.03", "0.1", "0.2"):
        assert m[f"attack/pgd/eps_{e}/accuracy"] <= m[f"attack/fgsm/eps_{e}/accuracy"]


def test_fooling_images_reach_99_percent_for_every_class(digits_run):
    _, _, tmp, _, after = digits_run
    m = after.data.metrics
    assert m["attack/fooling/fooled"] == 1.0 and m["attack/fooling/mean_confidence"] >= 0.99
    rows = json.loads((tmp / "attack" / "fooling.json").read_text())
    assert [r["class"] for r in rows] == [str(d) for d in range(10)]
    assert all(r["confidence"] >= 0.99 and r["answer"] == r["class"] for r in rows)


def test_attack_logs_figures_and_leaves_the_run_alone(digits_run):
    run_id, client, tmp, before, after = digits_run
    assert after.info.status == before.info.status == "FINISHED"
    assert {k: v for k, v in after.data.metrics.items() if k.startswith("test/")} == \
        {k: v for k, v in before.data.metrics.items() if k.startswith("test/")}
    logged = {a.path for a in client.list_artifacts(run_id, "attack")}
    assert {"attack/accuracy_vs_eps.png", "attack/fgsm", "attack/pgd", "attack/fooling"} <= logged
    assert {a.path for a in client.list_artifacts(run_id, "attack/pgd")} == {"attack/pgd/examples.png"}
    for f in ("accuracy_vs_eps.png", "fgsm/examples.png", "pgd/examples.png", "fooling/images.png", "pgd.json"):
        assert (tmp / "attack" / f).is_file()
    rows = json.loads((tmp / "attack" / "pgd.json").read_text())
    assert [r["eps"] for r in rows] == [0.0, 0.03, 0.1, 0.2]
    assert all(r["max_change"] <= r["eps"] + 1e-6 for r in rows)  # the budget holds


@pytest.mark.parametrize(("args", "needle"), [
    (["eps=abc"], "eps: 'abc' is not a number (eps is a budget in [0, 1] units of the raw pixel range"),
    (["eps=0.01,2"], "eps: 2 lies outside [0, 1]"),
    (["method=fgsm,pdg"], "unknown attack method 'pdg' (did you mean 'pgd'? valid: fgsm, fooling, pgd)"),
    (["pgd_steps=0"], "pgd_steps: must be positive, got 0"),
    (["pgd_random_start=maybe"], "pgd_random_start: 'maybe' is not true or false"),
])
def test_attack_options_are_one_line_errors(run_dlrun, args, needle):
    assert needle in stderr_line(run_dlrun("attack", "run_id=not-a-run", *args, expect=2))


# -- adversarial training ----------------------------------------------------------------


def test_the_adversarial_step_swaps_the_first_share_of_each_batch():
    """A spy layer records what the network trains on: with mix 0.5 the first half of the batch
    is the FGSM version (every pixel moved by exactly eps where [0, 1] leaves room), the second
    half the clean images; validation and prediction see clean images."""
    import keras
    from omegaconf import OmegaConf

    from dlrun.training.adversarial import AdversarialTraining, plain, wrap

    class Spy(keras.layers.Layer):
        def build(self, shape):
            self.seen = self.add_weight(shape=(8, *shape[1:]), initializer="zeros", trainable=False, name="seen")

        def call(self, x, training=False):
            if training:
                self.seen.assign(x)
            return x

    image = keras.Input((4, 4, 1))
    spy = Spy()
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(spy(image)))
    cfg = OmegaConf.create({"task": {"adversarial": {"eps": 0.1, "method": "fgsm", "mix": 0.5, "pgd_steps": 3,
                                                     "pgd_step_size": 0.25}}, "trainer": {"loop": "fit"}})
    model = wrap(keras.Model(image, out, name="net"), cfg)
    assert isinstance(model, AdversarialTraining) and model.name == "net"
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0.2, 0.8, (8, 4, 4, 1)).astype("float32")
    model.fit(x, np.arange(8) % 3, batch_size=8, epochs=1, verbose=0, shuffle=False)
    seen = np.asarray(spy.seen)
    assert np.allclose(np.abs(seen[:4] - x[:4]), 0.1, atol=1e-6)
    assert np.array_equal(seen[4:], x[4:])
    served = plain(model)
    assert type(served) is not AdversarialTraining and served.count_params() == model.count_params()


def test_adversarial_settings_are_checked():
    from omegaconf import OmegaConf

    from dlrun.training.adversarial import settings

    def cfg(loop="fit", **adv):
        block = {"eps": 0.1, "method": "fgsm", "mix": 0.5, "pgd_steps": 3, "pgd_step_size": 0.25, **adv}
        return OmegaConf.create({"task": {"adversarial": block}, "trainer": {"loop": loop}})

    assert settings(cfg(eps=0.0)) is None
    with pytest.raises(DlrunError, match="task.adversarial.method: unknown method 'fsgm'.*valid: fgsm, pgd"):
        settings(cfg(method="fsgm"))
    with pytest.raises(DlrunError, match=r"task.adversarial.mix: must lie in \(0, 1\]"):
        settings(cfg(mix=0))
    with pytest.raises(DlrunError, match="task.adversarial needs trainer.loop=fit"):
        settings(cfg(loop="custom"))


def test_adversarial_run_serves_the_plain_network(tmp_path):
    """A short run with PGD training: the logged served model and the best checkpoint reload, the
    served one without any dlrun class; `dlrun eval checkpoint=` reads the checkpoint."""
    dlrun(tmp_path, "train", "task=cnn", "trainer=smoke", "trainer.smoke=false",  # smoke keeps no checkpoint
          "trainer.checkpoint.enabled=true", "task.adversarial.eps=0.1", "task.adversarial.method=pgd",
          "hydra.run.dir=run")
    served = tmp_path / "run" / "served" / "model.keras"
    config = zipfile.ZipFile(served).read("config.json").decode()
    assert "AdversarialTraining" not in config and '"name": "cnn"' in config
    assert "AdversarialTraining" in zipfile.ZipFile(tmp_path / "run" / "best.keras").read("config.json").decode()
    dlrun(tmp_path, "eval", f"checkpoint={tmp_path / 'run' / 'best.keras'}", "task=cnn", "trainer=smoke",
          "tracking=off", "hydra.run.dir=eval")


def test_adversarial_pgd_training_under_two_mirrored_replicas(tmp_path):
    """The adversarial step runs per replica under MirroredStrategy (two logical CPU devices)."""
    from mlflow.tracking import MlflowClient

    dlrun(tmp_path, "train", "task=cnn", "trainer=smoke", "strategy=mirrored", "strategy.cpu_replicas=2",
          "task.adversarial.eps=0.1", "task.adversarial.method=pgd", "trainer.progress=false")
    (run,) = store_runs(MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    assert run.info.status == "FINISHED" and run.data.params["strategy.replicas"] == "2"
    assert run.data.params["task.adversarial.method"] == "pgd"
