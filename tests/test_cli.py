"""The CLI surface: help, version, list, and one-line errors for bad input (exit code 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import stderr_line

HEAVY = ("tensorflow", "mlflow", "matplotlib", "keras")


def _imports_after(code: str) -> set[str]:
    probe = (
        "import sys\n"
        f"{code}\n"
        f"print('LOADED:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("LOADED:")][-1]
    return set(filter(None, line[len("LOADED:"):].split(",")))


def test_help_and_list_import_no_heavy_modules():
    helper = (
        "from dlrun.cli import main\n"
        "for argv in (['--help'], ['list'], ['--version']):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
    )
    assert _imports_after(helper) == set()
    assert _imports_after("import dlrun, dlrun.registry; dlrun.registry._load_all()") == set()


def test_help_version_list(run_dlrun):
    out = run_dlrun("--help").stdout
    assert "dlrun train" in out and "dlrun eval" in out and "dlrun list" in out
    assert run_dlrun("--version").stdout.startswith("dlrun ")
    listing = run_dlrun("list").stdout
    for name in ("tabular", "mlp", "insurance", "iris", "csv", "mirrored", "multi_worker", "insurance",
                 "binary_dummy", "smoke", "q_learning", "value_iteration", "dlrun/Orso-v1", "Pendulum-v1"):
        assert name in listing
    assert "RL agents (agent=NAME" in listing and "RL environments (env=NAME" in listing
    agents = run_dlrun("list", "agents").stdout
    assert "ppo" in agents and "tabular" in agents and "RL environments" not in agents


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "task=tabulr"], "unknown task 'tabulr'"),
    (["train", "model=mpl"], "unknown model 'mpl'"),
    (["train", "data=iriss"], "unknown data 'iriss'"),
    (["train", "strategy=mirored"], "unknown strategy 'mirored'"),
    (["train", "experiment=nope"], "unknown experiment 'nope'"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["list", "modles"], "unknown group 'modles'"),
])
def test_unknown_names_list_the_valid_ones(run_dlrun, workdir, args, needle):
    proc = run_dlrun(*args, expect=2)
    line = stderr_line(proc)
    assert needle in line
    if "task" in needle:
        assert "tabular" in line  # the valid names are listed
    if "strategy" in needle:
        assert "mirrored" in line and "did you mean" in line
    assert not (workdir / "mlflow.db").exists()  # rejected before any run was started


@pytest.mark.parametrize(("args", "needle"), [
    (["trainer.learning_rate=0"], "trainer.learning_rate must be > 0"),
    (["trainer.learning_rate=-1e-3"], "trainer.learning_rate must be > 0"),
    (["trainer.beta_1=1"], "trainer.beta_1 must be in [0, 1)"),
    (["trainer.epochs=0"], "trainer.epochs must be >= 1"),
    (["trainer.epochs=abc"], "trainer.epochs"),
    (["+trainer.epoch=3"], "trainer.epoch: unknown key"),
    (["trainer.optimizer=adamm"], "trainer.optimizer: unknown value 'adamm'"),
    (["data=csv"], "a required value is missing"),
    (["data=csv", "data.target=y"], "data.path: a required value is missing"),
    (["trainer.epcohs=3"], "trainer.epcohs: unknown key (did you mean 'epochs'?"),
    (["model.hidden_unit=[3]"], "model.hidden_unit: unknown key (did you mean 'hidden_units'?"),
    (["trainer.epochs=["], "trainer.epochs=["),
    (["model.hidden_units=abc"], "model.hidden_units must be a positive integer or a list of them, got 'abc'"),
    (["model.dropout=1.5"], "model.dropout must be a number in [0, 1), got 1.5"),
    (["data.n_samples=0"], "data.n_samples must be an integer >= 1, got 0"),
    (["-m", "trainer.epohcs=1,2"], "trainer.epohcs: unknown key (did you mean 'epochs'?"),
    (["tracking.uri=foo://bar"], "tracking.uri 'foo://bar': unknown store scheme 'foo'"),
    (["eval"], None),
])
def test_bad_config_values_are_one_line(run_dlrun, args, needle):
    command = ["eval"] if args == ["eval"] else ["train", *args]
    line = stderr_line(run_dlrun(*command, expect=2))
    assert (needle or "eval needs a model") in line


def test_the_console_script_trains_and_logs_a_run(run_process, runs):
    """One real `dlrun` process in the default tier: the installed entry point, TensorFlow's
    start-up in a fresh interpreter, the exit code and the store it leaves behind."""
    proc = run_process("train", "trainer=smoke")
    assert "done in" in proc.stdout and "Traceback" not in proc.stderr
    (run,) = runs()
    assert run.info.status == "FINISHED" and "test/accuracy" in run.data.metrics


@pytest.mark.parametrize(("args", "needle", "valid"), [
    (["train", "task=rl", "agent=dqnn"], "unknown agent 'dqnn'", "did you mean 'dqn'"),
    (["train", "task=rl", "env=cartpol"], "unknown env 'cartpol'", "did you mean 'cartpole'"),
])
def test_agent_and_env_typos_name_the_valid_ones(run_dlrun, args, needle, valid):
    line = stderr_line(run_dlrun(*args, expect=2))
    assert needle in line and valid in line


def test_multirun_flag_may_follow_the_overrides(run_dlrun, runs):
    """`dlrun train trainer=smoke -m key=a,b` is a sweep, as `dlrun train -m ...` is."""
    run_dlrun("train", "trainer=smoke", "tracking.log_model=false", "-m", "trainer.seed=1,2")
    jobs = [r for r in runs() if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["trainer.seed"] for r in jobs) == ["1", "2"]


def test_eval_of_a_bad_checkpoint_path_is_one_quiet_line(run_process, workdir):
    """Checked before TensorFlow starts: no start-up chatter around the one line."""
    (workdir / "rows.csv").write_text("a,b\n1,2\n")
    for path, needle in (("nope.keras", "does not exist"), ("rows.csv", "is not a Keras model file")):
        proc = run_process("eval", f"checkpoint={path}", "task=tabular", expect=2)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_overrides_are_read_with_hydras_grammar():
    """One reader of key=value arguments (Hydra's parser) for every place that needs a key, a
    value or a sweep's first job."""
    from dlrun.overrides import first_job, override_key, parse_override, sweep_choices, value_of

    assert first_job("model.hidden_units=[32],[64,64]") == "model.hidden_units=[32]"
    assert first_job("+task=choice(cnn,tabular)") == "+task=cnn"
    assert first_job("trainer.epochs=range(1,4)") == "" and first_job("hydra.run.dir=x") == ""
    assert first_job("data.path='a,b.csv'") == "data.path='a,b.csv'"  # quoted: one value, not a sweep
    assert first_job("--cfg") == "--cfg" and parse_override("data.path=größe.csv") is None
    assert override_key("++data.path=x") == "data.path" and override_key("~model.l2") == "model.l2"
    assert sweep_choices(parse_override("task=cnn,tabular")) == ["cnn", "tabular"]
    assert value_of(["tracking.uri=a", "x=1", "+tracking.uri=sqlite:///b.db"], "tracking.uri") == "sqlite:///b.db"
    assert value_of(["x=1"], "tracking.uri") is None
