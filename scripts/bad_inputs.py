"""Probe dlrun with bad inputs and faults as a user meets them (issue 7) and count the outcomes.

Each case runs the real `dlrun` console script in its own fresh folder and checks three things:
the exit code, that stderr holds exactly one line from dlrun (no traceback; TensorFlow's C++
start-up chatter and `warning:` lines do not count), and the status of the newest MLflow run
(none when the input is rejected before a run starts).

    python scripts/bad_inputs.py            # all cases, two at a time
    python scripts/bad_inputs.py nan junk   # cases whose name contains one of the words
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DLRUN = shutil.which("dlrun", path=str(Path(sys.executable).parent)) or "dlrun"
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "CUDA_VISIBLE_DEVICES": "",
       "CI": "true", "COLUMNS": "200"}


def csv(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)


def rows(n: int, target=lambda i, a, b: int(a > b), seed: int = 0) -> str:
    import numpy as np

    rng = np.random.default_rng(seed)
    return "".join(f"{a:.3f},{b:.3f},{target(i, a, b)}\n" for i, (a, b) in enumerate(rng.normal(size=(n, 2))))


def pngs(folder: Path, classes=("a", "b"), n: int = 8) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (folder / "imgs" / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(folder / "imgs" / c / f"{i}.png")


def run(folder: Path, *args, timeout: int = 300):
    return subprocess.run([DLRUN, *args], cwd=folder, env=ENV, capture_output=True, text=True, timeout=timeout)


def train_first(folder: Path, *args):
    """A finished run to evaluate or predict with; returns its run id."""
    run(folder, "train", "trainer=smoke", *args)
    return newest(folder)[0]


TINY = ("train", "experiment=insurance", "trainer.epochs=2", "trainer.limit_batches=2")


def delete_experiment(folder: Path, name: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    client.delete_experiment(client.get_experiment_by_name(name).experiment_id)


def newest(folder: Path):
    db = folder / "mlflow.db"
    if not db.exists() or db.read_bytes()[:6] != b"SQLite":
        return None, None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exps = client.search_experiments(view_type=3)
    found = client.search_runs([e.experiment_id for e in exps], order_by=["attributes.start_time DESC"],
                               max_results=1, run_view_type=3)
    return (found[0].info.run_id, found[0].info.status) if found else (None, None)


def one_line(stderr: str) -> bool:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not _noise(ln)]
    return "Traceback" not in stderr and len(lines) == 1


def _noise(line: str) -> bool:
    return (line[:1] in "IWE" and line[1:5].isdigit()) or line.startswith(
        ("WARNING: All log messages", "To enable the following", "warning:"))


# -- the cases: name -> (setup(folder) -> argv, expected exit, expected newest run status) ----

def sigterm(folder):
    proc = subprocess.Popen([DLRUN, "train", "experiment=insurance", "trainer.epochs=200"], cwd=folder, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not proc.stdout.readline().startswith("epoch "):
        if proc.poll() is not None:
            break
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def two_first_runs(folder):
    procs = [subprocess.Popen([DLRUN, "train", "trainer=smoke"], cwd=folder, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    done = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    statuses = [r.info.status for r in client.search_runs([e.experiment_id for e in client.search_experiments()])]
    ok = codes == [0, 0] and statuses == ["FINISHED", "FINISHED"]
    return subprocess.CompletedProcess("two", 0 if ok else 1, "", "" if ok else f"{codes} {statuses} {done[0][1][-500:]}")


CASES = {
    "sigterm": (sigterm, 143, "KILLED"),
    "two_first_runs_same_second": (two_first_runs, 0, "FINISHED"),
    "nan_loss": (lambda f: ["train", "experiment=insurance", "trainer.optimizer=sgd", "trainer.learning_rate=1e6",
                            "trainer.epochs=10"], 2, "FAILED"),
    "one_class_image_folder": (lambda f: (pngs(f, ("a",)), ["train", "task=cnn", "trainer=smoke", "data=folder",
                                                             "data.path=imgs", "data.image_size=[8,8]"])[1], 2, "FAILED"),
    "constant_numeric_target": (lambda f: (csv(f, "c.csv", "a,b,y\n" + rows(100, lambda i, a, b: 2.5)),
                                           ["train", "trainer=smoke", "data=csv", "data.path=c.csv", "data.target=y"])[1],
                                2, "FAILED"),
    "empty_target_cells_warned": (lambda f: (csv(f, "g.csv", "a,b,y\n" + rows(120, lambda i, a, b: "" if i % 10 == 0 else int(a > b))),
                                             ["train", "trainer=smoke", "data=csv", "data.path=g.csv", "data.target=y"])[1],
                                  0, "FINISHED"),
    "corrupt_png": (lambda f: (pngs(f), (f / "imgs/a/bad.png").write_bytes(b"\x89PNG junk"),
                               ["train", "task=cnn", "trainer=smoke", "data=folder", "data.path=imgs",
                                "data.image_size=[8,8]"])[2], 2, "FAILED"),
    "corrupt_mlflow_db": (lambda f: ((f / "mlflow.db").write_bytes(b"junk" * 100), ["train", "trainer=smoke"])[1], 2, None),
    "tracking_uri_unknown_scheme": (lambda f: ["train", "trainer=smoke", "tracking.uri=foo://bar"], 2, None),
    "tracking_server_unreachable": (lambda f: ["train", "trainer=smoke", "tracking.uri=http://127.0.0.1:9"], 2, None),
    "model_hidden_units_abc": (lambda f: ["train", "trainer=smoke", "model.hidden_units=abc"], 2, None),
    "model_dropout_1.5": (lambda f: ["train", "trainer=smoke", "model.dropout=1.5"], 2, None),
    "data_n_samples_0": (lambda f: ["train", "trainer=smoke", "data.n_samples=0"], 2, None),
    "trainer_epochs_abc": (lambda f: ["train", "trainer.epochs=abc"], 2, None),
    "learning_rate_negative": (lambda f: ["train", "trainer.learning_rate=-1"], 2, None),
    "unknown_task": (lambda f: ["train", "task=cnnn"], 2, None),
    "unknown_model": (lambda f: ["train", "model=resnett"], 2, None),
    "unknown_data": (lambda f: ["train", "data=insurence"], 2, None),
    "misspelled_key": (lambda f: ["train", "trainer.epcohs=3"], 2, None),
    "sweep_misspelled_key": (lambda f: ["train", "-m", "trainer=smoke", "trainer.epohcs=1,2"], 2, None),
    "csv_three_rows": (lambda f: (csv(f, "t.csv", "a,b,y\n1,2,x\n3,4,y\n5,6,x\n"),
                                  ["train", "trainer=smoke", "data=csv", "data.path=t.csv", "data.target=y"])[1], 2, "FAILED"),
    "csv_missing_file": (lambda f: ["train", "trainer=smoke", "data=csv", "data.path=nope.csv", "data.target=y"], 2, "FAILED"),
    "csv_path_is_a_folder": (lambda f: ((f / "d.csv").mkdir(), ["train", "trainer=smoke", "data=csv", "data.path=d.csv",
                                                                "data.target=y"])[1], 2, "FAILED"),
    "csv_no_such_target": (lambda f: (csv(f, "u.csv", "a,b,y\n" + rows(60)),
                                      ["train", "trainer=smoke", "data=csv", "data.path=u.csv", "data.target=Y"])[1],
                           2, "FAILED"),
    "csv_non_ascii_unquoted": (lambda f: (csv(f, "u.csv", "größe,b,y\n" + rows(60)),
                                          ["train", "trainer=smoke", "data=csv", "data.path=u.csv", "data.target=y",
                                           "data.features=[größe,b]"])[1], 2, None),
    "series_bad_date": (lambda f: (csv(f, "s.csv", "date,sales\n2024-01-01,1\nyesterday,2\n2024-01-03,3\n"),
                                   ["train", "task=sequence", "trainer=smoke", "data=csv_series", "data.path=s.csv",
                                    "data.target=sales", "data.time_column=date"])[1], 2, "FAILED"),
    "junk_keras_file": (lambda f: ((f / "m.keras").write_text("junk"), ["eval", "checkpoint=m.keras"])[1], 2, None),
    "eval_checkpoint_other_data": (lambda f: (run(f, "train", "trainer.epochs=1", "trainer.limit_batches=2",
                                                  "tracking=off", "hydra.run.dir=o"),
                                              ["eval", "checkpoint=o/best.keras", "data=iris", "tracking=off"])[1], 2, None),
    "eval_failed_run": (lambda f: (run(f, "train", "trainer=smoke", "model.loss=mse", "data=iris"),
                                   ["eval", f"run_id={newest(f)[0]}"])[1], 2, "FAILED"),
    "eval_unknown_run": (lambda f: ["eval", "run_id=0123456789abcdef"], 2, None),
    "predict_without_input": (lambda f: ["predict", f"run_id={train_first(f)}"], 2, "FINISHED"),
    "predict_missing_column": (lambda f: (csv(f, "p.csv", "speed,age\n100,30\n"),
                                          ["predict", f"run_id={train_first(f)}", "input=p.csv"])[1], 2, "FINISHED"),
    "eval_misspelled_key": (lambda f: ["eval", f"run_id={train_first(f)}", "data.pth=x.csv"], 2, "FINISHED"),
    # round 2 (issue 23)
    "resume_finished_run": (lambda f: (run(f, *TINY), [*TINY, "trainer.resume=auto"])[1], 2, "FINISHED"),
    "eval_checkpoint_other_task": (lambda f: (run(f, *TINY, "tracking=off", "hydra.run.dir=o"),
                                              ["eval", "checkpoint=o/best.keras", "task=cnn", "tracking=off"])[1], 2, None),
    "eval_served_model_as_checkpoint": (lambda f: (run(f, *TINY, "hydra.run.dir=o"),
                                                   ["eval", "checkpoint=o/served/model.keras", "task=tabular",
                                                    "data=breast_cancer", "tracking=off"])[1], 2, "FINISHED"),
    "eval_checkpoint_is_a_folder": (lambda f: ["eval", "checkpoint=.", "task=tabular"], 2, None),
    "predict_rows_with_the_target": (lambda f: (csv(f, "r.csv", "speed,age,miles,group\n80,30,10000,0\n"
                                                    "150,22,30000,2\n"),
                                                ["predict", f"run_id={train_first(f, 'experiment=insurance')}",
                                                 "input=r.csv"])[1], 0, "FINISHED"),
    "multirun_flag_after_overrides": (lambda f: ["train", "trainer=smoke", "-m", "trainer.learning_rate=0.001,0.01"],
                                      0, "FINISHED"),
    "series_duplicate_dates": (lambda f: (csv(f, "s.csv", "date,sales\n" + "".join(
        f"{2020 + m // 12}-{m % 12 + 1:02d}-01,{m}\n" for m in (*range(4), 3, *range(4, 48)))),
                                          ["train", "task=sequence", "trainer=smoke", "data=csv_series", "data.path=s.csv",
                                           "data.target=sales", "data.time_column=date"])[1], 2, "FAILED"),
    "csv_latin1": (lambda f: ((f / "l.csv").write_bytes(("a,b,y\n" + rows(60, lambda i, a, b: "oui" if a > b else "café"))
                                                       .encode("latin-1")),
                              ["train", "trainer=smoke", "data=csv", "data.path=l.csv", "data.target=y"])[1], 2, "FAILED"),
    "csv_headerless": (lambda f: (csv(f, "h.csv", rows(60)),
                                  ["train", "trainer=smoke", "data=csv", "data.path=h.csv", "data.target=label"])[1],
                       2, "FAILED"),
    "deleted_experiment": (lambda f: (run(f, "train", "trainer=smoke", "tracking.experiment=gone"), delete_experiment(f, "gone"),
                                      ["train", "trainer=smoke", "tracking.experiment=gone"])[2], 2, "FINISHED"),
    "detection_csv_nine_fields": (lambda f: (csv(f, "b.csv", "filename,width,height,class,xmin,ymin,xmax,ymax\n"
                                                 "a.png,10,10,cat,1,1,5,5\nb.png,10,10,dog,1,1,5,5,9\n"),
                                             ["train", "task=detection", "data=voc", "data.path=b.csv", "trainer=smoke"])[1],
                                  2, "FAILED"),
    "rl_agent_typo": (lambda f: ["train", "task=rl", "agent=dqnn"], 2, None),
}


def read_only(folder: Path):
    """A folder nobody may write to (a read-only tmpfs for root, chmod otherwise); None if impossible."""
    ro = folder / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        return ro
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode:
        return None
    return ro


def probe(name: str, base: Path) -> dict:
    folder = base / name
    folder.mkdir()
    if name.startswith("read_only"):
        ro = read_only(folder)
        if ro is None:
            return {"case": name, "skipped": "cannot make a read-only folder"}
        try:
            extra = [f"hydra.run.dir={folder / 'out'}"] if name.endswith("run_dir") else []
            proc = run(ro, "train", "trainer=smoke", *extra)
        finally:
            if os.geteuid() == 0:
                subprocess.run(["umount", str(ro)], capture_output=True)
        expect_code, expect_status = 2, None
    else:
        setup, expect_code, expect_status = CASES[name]
        made = setup(folder)
        proc = made if isinstance(made, subprocess.CompletedProcess) else run(folder, *made)
    status = newest(folder)[1] if not name.startswith("read_only") else None
    last = [ln for ln in proc.stderr.splitlines() if ln.strip() and not _noise(ln)][-1:] or [""]
    single = one_line(proc.stderr) if expect_code != 0 else (  # a success: no traceback, no stray warning
        "Traceback" not in proc.stderr and "UserWarning" not in proc.stderr)
    return {"case": name, "exit": proc.returncode, "exit_ok": proc.returncode == expect_code,
            "one_line": single, "status": status, "status_ok": status == expect_status, "message": last[0][:150]}


def main(argv: list[str]) -> int:
    names = [*CASES, "read_only_folder", "read_only_folder_with_run_dir"]
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    with tempfile.TemporaryDirectory(prefix="dlrun-probe-") as tmp, ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda n: probe(n, Path(tmp)), names))
    done = [r for r in results if "skipped" not in r]
    for r in results:
        if "skipped" in r:
            print(f"{r['case']:32} skipped: {r['skipped']}")
            continue
        marks = "".join("." if r[k] else "x" for k in ("exit_ok", "one_line", "status_ok"))
        print(f"{r['case']:32} {marks}  exit {r['exit']:<3} run {r['status'] or '-':9} {r['message']}")
    print(f"\n{len(done)} cases: exit code right {sum(r['exit_ok'] for r in done)}, one line (no traceback) "
          f"{sum(r['one_line'] for r in done)}, run status right {sum(r['status_ok'] for r in done)}")
    return 0 if all(r["exit_ok"] and r["one_line"] and r["status_ok"] for r in done) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
