"""GAN and SSD detection train through the runner's Keras fit (issue 20): the run's callbacks,
early stopping, strategies and mixed precision apply to them, their validation metrics have
Keras names, sweeps get the validation objective, and `dlrun eval run_id=` needs nothing that
lived only inside fit."""

from __future__ import annotations

import pytest
from conftest import stderr_line

GAN = ("train", "experiment=cgan", "trainer=smoke", "trainer.smoke=false", "trainer.fast=true",
       "trainer.limit_batches=2", "trainer.epochs=3", "task.sample_every=2")
DETECTION = ("train", "task=detection", "trainer=smoke", "trainer.smoke=false", "trainer.fast=true",
             "trainer.limit_batches=2", "trainer.epochs=2", "data.n_train=32", "data.n_val=16", "data.n_test=16")
# patience 1 and an improvement no epoch can make: the first epoch sets the best, the second stops
STOP_EARLY = ("trainer.epochs=6", "trainer.early_stopping.enabled=true", "trainer.early_stopping.patience=1",
              "trainer.early_stopping.min_delta=1e9")


def _history(client, run, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """One short cGAN run with the best checkpoint on, then `dlrun eval run_id=` of it."""
    from conftest import _checked, dlrun_inprocess, store_runs
    from mlflow.tracking import MlflowClient

    workdir = tmp_path_factory.mktemp("gan")
    args = (*GAN, "trainer.checkpoint.enabled=true")
    train = _checked(dlrun_inprocess(args, workdir), args, 0)
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    (run,) = store_runs(client)
    ev = dlrun_inprocess(("eval", f"run_id={run.info.run_id}"), workdir)
    return workdir, client, client.get_run(run.info.run_id), train, ev


def test_gan_sweep_objective_is_the_validation_frechet_distance_at_the_best_epoch(gan_run):
    _, client, run, _, _ = gan_run
    fd = _history(client, run, "val/frechet_distance")
    assert [s for s, _ in fd] == [1, 2, 3]
    best = min(fd, key=lambda p: p[1])
    assert run.data.metrics["objective/val"] == pytest.approx(best[1])
    assert run.data.tags["dlrun.objective"] == "val_frechet_distance"
    assert run.data.tags["dlrun.evaluated_weights"].startswith(f"best (val_frechet_distance {best[1]:.6g} at epoch {best[0]})")
    for key in ("train/d_loss", "train/g_loss", "train/d_acc_real", "val/d_loss", "val/g_loss", "val/label_accuracy"):
        assert [s for s, _ in _history(client, run, key)] == [1, 2, 3], key
    assert not any(k.startswith(("train/val", "val/val")) for k in run.data.metrics)


def test_gan_eval_of_a_run_scores_the_logged_generator_again(gan_run):
    _, client, run, _, ev = gan_run
    assert ev.returncode == 0, ev.stderr[-3000:]
    for key in ("test/frechet_distance", "test/label_accuracy", "test/classifier_accuracy"):
        points = [v for _, v in _history(client, run, key)]
        assert len(points) == 2, key  # training's, then eval's
    # the judge is rebuilt from the data and the seed: the same instrument, the same generator
    fd = [v for _, v in _history(client, run, "test/frechet_distance")]
    assert fd[1] == pytest.approx(fd[0], rel=0.05)


def test_gan_sample_grids_are_logged_from_the_run_folder(gan_run):
    _, client, run, _, _ = gan_run
    plots = {a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"samples_epoch_0002.png", "samples_epoch_0003.png", "samples.png"} <= plots
    assert "samples_epoch_0001.png" not in plots  # task.sample_every=2, and the last epoch


def test_early_stopping_stops_a_gan_and_a_detection_run(run_dlrun, runs, mlflow_client):
    for args, key in ((GAN, "val/frechet_distance"), (DETECTION, "val/map50")):
        run_dlrun(*args, *STOP_EARLY)
        run = runs()[0]
        assert [s for s, _ in _history(mlflow_client, run, key)] == [1, 2], args[1]
        assert run.data.metrics["timing/epochs"] == 2


@pytest.mark.parametrize("args", [GAN, DETECTION], ids=["gan", "detection"])
def test_gan_and_detection_train_under_mirrored_two_replicas(args, run_dlrun, runs, mlflow_client):
    out = run_dlrun(*args, "strategy=mirrored", "strategy.cpu_replicas=2", "trainer.epochs=1").stdout
    assert "replicas=2" in out
    run = runs()[0]
    assert run.info.status == "FINISHED" and run.data.params["strategy.replicas"] == "2"
    key = "test/frechet_distance" if "experiment=cgan" in args else "test/map50"
    assert key in run.data.metrics


@pytest.mark.parametrize("args", [GAN, DETECTION], ids=["gan", "detection"])
def test_gan_and_detection_train_in_mixed_bfloat16(args, run_dlrun, runs):
    run_dlrun(*args, "trainer.precision=mixed_bfloat16", "trainer.epochs=1")
    run = runs()[0]
    assert run.info.status == "FINISHED"
    loss = "train/d_loss" if "experiment=cgan" in args else "train/loss"
    assert loss in run.data.metrics


def test_gan_refuses_the_trainer_options_it_cannot_honour(run_dlrun, runs):
    line = stderr_line(run_dlrun(*GAN, "trainer.loop=custom", expect=2))
    assert "task=gan trains with trainer.loop=fit" in line
    line = stderr_line(run_dlrun(*GAN, "trainer.lr_schedule.name=reduce_on_plateau", expect=2))
    assert "reduce_on_plateau" in line and "two" in line
    assert runs() == []  # refused before a run started
