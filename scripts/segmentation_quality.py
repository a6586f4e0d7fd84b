"""Train the segmentation presets over several training seeds with the real CLI and print their
test mean IoU (mean ± std) beside both baselines, and the wall time.

    python scripts/segmentation_quality.py                          # shapes_fcn and shapes_unet, seeds 0 1 2
    python scripts/segmentation_quality.py shapes_fcn --seeds 0     # one preset, one seed
    python scripts/segmentation_quality.py shapes_fcn model.variant=32s --seeds 0 1   # overrides before --seeds
    python scripts/segmentation_quality.py shapes_fcn --explain     # + dlrun attack and dlrun explain on each run

Each run is `dlrun train experiment=NAME trainer.seed=S [overrides]` in a temporary folder with
its own MLflow store (sqlite); the metrics are read back from the MLflow run, so the numbers are
what a user gets. The seed changes the initial weights, the batch order and the augmentation;
the generated data stay the same (data.seed). Exit code 1 when a preset's mean misses its bar.

--explain: on each trained run, in its folder and store, also
  dlrun attack run_id=<id> method=fgsm,pgd eps=0.01,0.03,0.1
  dlrun explain run_id=<id> method=gradcam,saliency,occlusion
and report the mean IoU under attack and the deletion drops (read back from the run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from _preset import trained

PRESETS = ("shapes_fcn", "shapes_unet")
BARS = {"shapes_fcn": 0.7, "shapes_unet": 0.8}  # preset -> minimum mean test/mean_iou over the seeds
EPS = ("0.01", "0.03", "0.1")
EXPLAINED = ("attack/clean/mean_iou", *(f"attack/{a}/eps_{e}/mean_iou" for a in ("fgsm", "pgd") for e in EPS),
             *(f"explain/{k}/deletion_drop" for k in ("gradcam", "saliency", "occlusion", "random")))
SHOWN = ("test/mean_iou", "test/pixel_accuracy", "test/dice", "val/mean_iou", "baseline/majority/mean_iou",
         "baseline/prior/mean_iou", "baseline/majority/pixel_accuracy")


def run(preset: str, seed: int, overrides: list[str], explain: bool = False) -> dict:
    cpu = _child_cpu()
    with trained([f"experiment={preset}", f"trainer.seed={seed}", "trainer.progress=false"], overrides,
                 f"{preset}-{seed}") as t:
        if t.run is None:
            return t.failed(preset)
        m, wall, cpu_train = t.metrics, t.wall_s, _child_cpu()
        if explain:
            t.dlrun("attack", "method=fgsm,pgd", f"eps={','.join(EPS)}", "output=attack")
            t.dlrun("explain", "method=gradcam,saliency,occlusion", "output=explain")
            explained = {k: v for k, v in t.client.get_run(t.run.info.run_id).data.metrics.items() if k in EXPLAINED}
            explained["explain_cpu_s"] = _child_cpu() - cpu_train
            print(f"  seed {seed} attack/explain: " + ", ".join(f"{k} {v:.3f}" for k, v in explained.items()), flush=True)
        result = {"preset": preset, "seed": seed, "command": t.command, "wall_s": round(wall, 1),
                  "fit_s": round(m.get("timing/fit_seconds", float("nan")), 1),
                  "epochs": int(m.get("timing/epochs", 0)), "params": int(t.run.data.params.get("model.params", 0)),
                  "cpu_s": round(cpu_train - cpu, 1)}
    result.update({k: round(m[k], 4) for k in SHOWN if k in m})
    result.update({k: round(v, 4) for k, v in sorted(m.items()) if k.startswith("test/iou/")})
    if explain:
        result.update({k: round(v, 4) for k, v in explained.items()})
    print(f"experiment={preset} seed {seed}: test mIoU {result.get('test/mean_iou')} (majority "
          f"{result.get('baseline/majority/mean_iou')}, prior {result.get('baseline/prior/mean_iou')}) in "
          f"{wall:.0f} s wall ({result['fit_s']} s fit, {result['cpu_s']} CPU s, {result['epochs']} epochs)", flush=True)
    return result


def _child_cpu() -> float:
    """CPU seconds (user + system) of finished child processes: on a shared machine the wall time
    grows with other jobs' load, the CPU time much less."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def summary(preset: str, runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    out = {"preset": preset, "seeds": [r["seed"] for r in ok], "failed": len(runs) - len(ok)}
    for key in ("test/mean_iou", "test/pixel_accuracy", "test/dice", "baseline/majority/mean_iou",
                "baseline/prior/mean_iou", "wall_s", "fit_s", "cpu_s", *EXPLAINED, "explain_cpu_s"):
        values = [r[key] for r in ok if key in r]
        if values:
            out[key] = {"mean": round(statistics.mean(values), 4),
                        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}
    if preset in BARS:
        out["pass"] = not out["failed"] and out.get("test/mean_iou", {}).get("mean", 0.0) >= BARS[preset]
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--explain", action="store_true", help="also dlrun attack and dlrun explain each run")
    args, rest = ap.parse_known_args(argv)
    presets = [a for a in rest if "=" not in a] or list(PRESETS)
    overrides = [a for a in rest if "=" in a]
    runs = {p: [run(p, s, overrides, args.explain) for s in args.seeds] for p in presets}
    summaries = [summary(p, r) for p, r in runs.items()]
    print(json.dumps({"runs": runs, "summary": summaries}, indent=1))
    for s in summaries:
        miou, maj, prior = (s.get(k, {}) for k in ("test/mean_iou", "baseline/majority/mean_iou",
                                                   "baseline/prior/mean_iou"))
        print(f"{s['preset']}: test mIoU {miou.get('mean')} ± {miou.get('std')} over seeds {s['seeds']} "
              f"(majority {maj.get('mean')}, per-pixel prior {prior.get('mean')}); wall "
              f"{s.get('wall_s', {}).get('mean')} ± {s.get('wall_s', {}).get('std')} s, CPU "
              f"{s.get('cpu_s', {}).get('mean')} s")
        for key in (k for k in EXPLAINED if k in s):
            print(f"  {key}: {s[key]['mean']} ± {s[key]['std']}")
    return 0 if all(s.get("pass", not s["failed"]) for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
