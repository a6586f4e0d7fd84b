"""Train the text presets with the real CLI over several seeds and print test accuracy beside the
baselines (mean ± std over the seeds).

    python scripts/text_quality.py                       # text_sentiment text_transformer bow, seeds 42 1 2
    python scripts/text_quality.py text_transformer --seeds 42

Each run is `dlrun train experiment=NAME trainer.seed=S [overrides]` ("bow" is `dlrun train
task=text model=bow`) in a temporary folder with its own MLflow store; the metrics are read back
from the run. The quality bar (issue 8), on the means: each preset's test accuracy above the bow
model's and above the TF-IDF + logistic regression baseline on the same split. Exit code 1 when a
preset misses it.
"""

from __future__ import annotations

import sys

from _preset import fmt, over_seeds, parse, table, trained

PRESETS = ("text_sentiment", "text_transformer", "bow")


def run(preset: str, overrides: list[str]) -> dict:
    args = ["task=text", "model=bow"] if preset == "bow" else [f"experiment={preset}"]
    with trained([*args, "trainer.progress=false"], overrides, preset) as t:
        if t.run is None:
            return t.failed(preset)
        m, wall = t.metrics, t.wall_s
    result = {"command": t.command, "wall_s": round(wall, 1), "epochs": int(m.get("timing/epochs", 0))}
    result.update({k: v for k, v in sorted(m.items()) if k in (
        "test/accuracy", "test/f1_macro", "test/roc_auc", "baseline/tfidf_logreg/accuracy")})
    print(f"{preset}: test accuracy {result.get('test/accuracy')} (tfidf_logreg "
          f"{result.get('baseline/tfidf_logreg/accuracy')}) in {wall:.1f} s", flush=True)
    return result


def main(argv: list[str]) -> int:
    names, overrides, seeds = parse(argv)
    summaries = {p: over_seeds(p, seeds, lambda extra, p=p: run(p, [*overrides, *extra])) for p in names or PRESETS}
    bow = summaries.get("bow", {}).get("mean", {}).get("test/accuracy")
    for p, s in summaries.items():
        mean = s["mean"]
        if p != "bow" and "test/accuracy" in mean:
            bars = [b for b in (mean.get("baseline/tfidf_logreg/accuracy"), bow) if b is not None]
            s["pass"] = all(mean["test/accuracy"] > b for b in bars)
            print(f"{p}: test accuracy {fmt(mean['test/accuracy'], s['std']['test/accuracy'])} vs "
                  f"{', '.join(f'{b:.4f}' for b in bars)}: {'met' if s['pass'] else 'MISSED'}")
    print(f"\nseeds {' '.join(map(str, seeds))}")
    print(table(list(summaries.values())))
    return 0 if all(s.get("pass") is not False and not s["failed"] for s in summaries.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
