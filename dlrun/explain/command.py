"""`dlrun explain` and `dlrun attack` on a logged run (called from inference.from_run).

The run's config and served model come as for `dlrun eval run_id=`; the images are the run's
test split (rebuilt from its config) or the files of `input=`. Each method returns a Report;
figures and tables are written under the `output=` folder and logged to the same MLflow run
under explain/ or attack/ (metrics explain/<method>/..., attack/<method>/eps_<e>/accuracy),
never over its test/* metrics and without changing its status.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dlrun import console
from dlrun.contract import Report
from dlrun.errors import DlrunError


def run(command: str, cfg, where: dict, served_dir: Path, opts) -> dict:
    """Run the methods of `opts.method`; returns the logged metrics (prefixed explain/ or attack/)."""
    from dlrun.explain import ATTACKS, EXPLAINERS
    from dlrun.registry import TASKS
    from dlrun.runner import prepare
    from dlrun.serving import load

    cfg, task_name, strategy = prepare(cfg)
    task = TASKS.get(task_name)()
    served = load(served_dir)
    lens = task.lens(cfg, served)
    registry = EXPLAINERS if command == "explain" else ATTACKS
    for method in opts.method:
        if method in lens.unsupported:
            usable = [m for m in registry.names() if m not in lens.unsupported]
            raise DlrunError(f"dlrun {command} method={method} does not apply to task '{task_name}'",
                             f"methods for it: {', '.join(usable)}")
    wanted = opts.examples if command == "attack" else max(opts.images, opts.deletion_images, opts.examples)
    x, targets, name = _images(task, cfg, strategy, served, lens, opts.input, wanted)
    console.header(command, task_name, cfg.model.name, name, {"images": len(x), "method": ",".join(opts.method)},
                   where.get("run_id"))
    report = Report()
    budget = [m for m in opts.method if "budget" in registry.entry(m).tags]  # attacks with an eps
    if budget:
        if targets is None:
            raise DlrunError(f"'{name}': no true classes to attack", "an input folder needs one sub-folder per class")
        clean = lens.measure(lens.answers(lens.predict(x, opts.batch_size)), targets)
        report.metrics[f"clean/{lens.metric}"] = clean
    for method in opts.method:
        report.merge(registry.get(method)(lens, x, targets, opts))
    if budget:
        from dlrun.plots.explain import attack_curve

        curves = {m: [report.metrics[f"{m}/eps_{e:g}/{lens.metric}"] for e in opts.eps] for m in budget}
        report.figures[f"{lens.metric}_vs_eps.png"] = attack_curve(opts.eps, curves, clean, lens.metric)
    return _finish(command, report, cfg, where, Path(opts.output))


def _images(task, cfg, strategy, served, lens, source, n: int):
    """(images in [0, 1] units, true class indices or None, a name): the first n test images of
    the run, or the files of `source`."""
    if source:
        examples = task.read(cfg, str(source), served)
        name = examples.name
    else:
        from dlrun.runner import build_data

        data, _, _ = build_data(task, cfg, strategy)
        examples, name = data.examples["test"], f"{data.info.name} (test)"
    inputs = examples.inputs
    if hasattr(inputs, "element_spec"):  # a tf.data split (folder, tfds)
        inputs = np.stack([np.asarray(t) for t in inputs.take(n)])
    if isinstance(inputs, list) and len({np.shape(a) for a in inputs[:n]}) > 1:  # segmentation: any sizes
        raise DlrunError(f"'{name}': the images have several sizes", "give images of one size (or resize them first)")
    x = np.asarray(inputs[:n], dtype="float32") * np.float32(lens.scale)
    if len(x) == 0:
        raise DlrunError(f"'{name}' has no images")
    targets = None if examples.targets is None else lens.encode(list(examples.targets[:len(x)]))
    return x, targets, name


def _finish(command: str, report: Report, cfg, where: dict, output: Path) -> dict:
    """Write the figures and tables under `output`, print, log to the run."""
    from dlrun.plots import close

    files = {}
    try:
        for name, figure in report.figures.items():
            path = output / name
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=110)
            files[name] = path
        for name, rows in report.tables.items():
            (output / f"{name}.json").write_text(json.dumps(rows, indent=1, default=str))
    except OSError as e:
        raise DlrunError(f"cannot write to '{output}': {e.strerror}", "set output=<a writable folder>") from None
    finally:
        close(report.figures)
    metrics = {f"{command}/{k}": float(v) for k, v in report.metrics.items()}
    console.report(Report(metrics=metrics, tables=report.tables), title=f"dlrun {command}")
    console.console.print(f"[green]wrote[/] {len(files)} figures and {len(report.tables)} tables to {output}")
    if "run_id" in where and cfg.tracking.enabled:
        from dlrun.tracking import log_to_existing_run

        log_to_existing_run(cfg.tracking, where["run_id"], metrics, report.tables, prefix=command, files=files)
        console.console.print(f"[green]logged[/] {len(metrics)} metrics and {len(files)} figures ({command}/*) "
                              f"to run {where['run_id']}")
    return metrics
