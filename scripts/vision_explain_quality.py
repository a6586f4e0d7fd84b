"""Robustness and faithfulness numbers of the digits CNN (experiment=cnn) with the real CLI.

    python scripts/vision_explain_quality.py                     # seeds 0 1 2, FGSM and PGD training
    python scripts/vision_explain_quality.py seeds=0 train=fgsm  # one seed, FGSM training only
    python scripts/vision_explain_quality.py cost                # epoch time: plain vs FGSM vs PGD training

For each seed, in a temporary folder with its own MLflow store:
  dlrun train experiment=cnn trainer.seed=S                                   (plain)
  dlrun train experiment=cnn trainer.seed=S task.adversarial.eps=0.1 [task.adversarial.method=pgd]
  dlrun attack run_id=<each> method=fgsm,pgd eps=0.01,0.03,0.1
  dlrun explain run_id=<plain> method=gradcam,saliency,occlusion deletion_images=360
and prints accuracy under attack and the deletion drops as mean +- std over the seeds (the
numbers read back from the runs' attack/* and explain/* metrics), as a Markdown table and JSON.
Exit code 1 when FGSM training does not raise FGSM accuracy at eps 0.1 on every seed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from _preset import trained

EPS = ("0.01", "0.03", "0.1")
TRAIN_EPS = 0.1


def attacked(seed: int, training: str | None, explain: bool = False) -> dict:
    """Clean accuracy, accuracy under FGSM/PGD at each eps (and deletion drops) of one run."""
    extra = [] if training is None else [f"task.adversarial.eps={TRAIN_EPS}", f"task.adversarial.method={training}"]
    with trained(["experiment=cnn", f"trainer.seed={seed}", "trainer.progress=false", *extra], [], "vision") as t:
        if t.run is None:
            raise RuntimeError(f"{t.command} failed ({t.returncode})")
        t.dlrun("attack", "method=fgsm,pgd", f"eps={','.join(EPS)}", "output=attack")
        if explain:
            t.dlrun("explain", "method=gradcam,saliency,occlusion", "deletion_images=360", "output=explain")
        m = t.client.get_run(t.run.info.run_id).data.metrics
        out = {"clean": m["attack/clean/accuracy"], "fit_s": m["timing/fit_seconds"]}
        out.update({f"{a}/eps_{e}": m[f"attack/{a}/eps_{e}/accuracy"] for a in ("fgsm", "pgd") for e in EPS})
        if explain:
            out.update({f"deletion/{k}": m[f"explain/{k}/deletion_drop"]
                        for k in ("gradcam", "saliency", "occlusion", "random")})
    print(f"seed {seed} training={training or 'plain'}: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()),
          flush=True)
    return out


def robustness(seed: int = 0, training: str = "fgsm") -> tuple[dict, dict]:
    """(plain run's numbers, adversarially trained run's numbers) for one seed."""
    return attacked(seed, None, explain=True), attacked(seed, training)


def _summary(rows: list[dict]) -> dict:
    keys = rows[0].keys()
    return {k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows]))) for k in keys}


def step_cost(repeats: int = 3) -> dict:
    """Seconds for 2 epochs of the experiment=cnn network on 16x16 digits: plain, FGSM and 7-step
    PGD adversarial training (the same AdversarialTraining wrapper as dlrun train), interleaved,
    the median of `repeats`; and each as a multiple of plain."""
    import time

    import keras
    from omegaconf import OmegaConf
    from sklearn.datasets import load_digits

    from dlrun.training.adversarial import wrap

    d = load_digits()
    x = np.repeat(np.repeat(d.images, 2, 1), 2, 2)[..., None].astype("float32") / 16
    layers = keras.layers

    def network():
        image = keras.Input((16, 16, 1))
        h = layers.MaxPooling2D()(layers.Conv2D(32, 3, padding="same", activation="relu")(image))
        h = layers.MaxPooling2D()(layers.Conv2D(64, 3, padding="same", activation="relu")(h))
        h = layers.Dense(256, activation="relu")(layers.Flatten()(h))
        return keras.Model(image, layers.Activation("softmax")(layers.Dense(10)(h)))

    times = {"plain": [], "fgsm": [], "pgd": []}
    for _ in range(repeats):
        for name in times:
            block = {"eps": 0.0 if name == "plain" else TRAIN_EPS, "method": "pgd" if name == "pgd" else "fgsm",
                     "mix": 0.5, "pgd_steps": 7, "pgd_step_size": 0.25}
            model = wrap(network(), OmegaConf.create({"task": {"adversarial": block}, "trainer": {"loop": "fit"}}))
            model.compile("adam", "sparse_categorical_crossentropy")
            model.fit(x[:64], d.target[:64], epochs=1, verbose=0)  # tracing
            start = time.perf_counter()
            model.fit(x, d.target, epochs=2, batch_size=32, verbose=0)
            times[name].append(time.perf_counter() - start)
    median = {k: float(np.median(v)) for k, v in times.items()}
    return {k: {"seconds": round(v, 2), "times_plain": round(v / median["plain"], 2)} for k, v in median.items()}


def main(argv: list[str]) -> int:
    if "cost" in argv:
        print(json.dumps(step_cost(), indent=1))
        return 0
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    seeds = [int(s) for s in args.get("seeds", "0,1,2").split(",")]
    trainings = [None, *args.get("train", "fgsm,pgd").split(",")]
    results = {str(tr or "plain"): [attacked(s, tr, explain=tr is None) for s in seeds] for tr in trainings}
    summary = {name: _summary(rows) for name, rows in results.items()}
    print(f"\nexperiment=cnn (digits 16x16), seeds {seeds}, adversarial training at eps {TRAIN_EPS}; mean ± std")
    print("| training | clean | " + " | ".join(f"{a.upper()} ε={e}" for a in ("fgsm", "pgd") for e in EPS) + " | fit s |")
    print("|---" * (3 + 2 * len(EPS)) + "|")
    for name, s in summary.items():
        cells = [f"{s[k][0]:.3f} ± {s[k][1]:.3f}" for k in ("clean", *(f"{a}/eps_{e}" for a in ("fgsm", "pgd")
                                                                     for e in EPS))]
        print(f"| {name} | " + " | ".join(cells) + f" | {s['fit_s'][0]:.0f} |")
    d = summary["plain"]
    print("\ndeletion test on the plain CNN (10 % of pixels set to 0, 360 test images): confidence drop")
    for k in ("gradcam", "saliency", "occlusion", "random"):
        print(f"  {k:10s} {d[f'deletion/{k}'][0]:.3f} ± {d[f'deletion/{k}'][1]:.3f}")
    print(json.dumps({k: [dict(r) for r in v] for k, v in results.items()}, indent=1))
    plain, robust = results["plain"], results.get("fgsm", [])
    ok = all(r["fgsm/eps_0.1"] > p["fgsm/eps_0.1"] for p, r in zip(plain, robust, strict=False))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(sys.argv[1:]))
