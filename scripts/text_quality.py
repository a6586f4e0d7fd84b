"""Train the text presets with the real CLI and print test accuracy beside the baselines.

    python scripts/text_quality.py                       # text_sentiment text_transformer bow
    python scripts/text_quality.py text_transformer trainer.seed=1

Each run is `dlrun train experiment=NAME [overrides]` ("bow" is `dlrun train task=text model=bow`)
in a temporary folder with its own MLflow store; the metrics are read back from the run. The
quality bar (issue 8): each preset's test accuracy above the bow model's and above the TF-IDF +
logistic regression baseline on the same split. Exit code 1 when a preset misses it.
"""

from __future__ import annotations

import json
import sys

from _preset import trained

PRESETS = ("text_sentiment", "text_transformer", "bow")


def run(preset: str, overrides: list[str]) -> dict:
    args = ["task=text", "model=bow"] if preset == "bow" else [f"experiment={preset}"]
    with trained(args, overrides, preset) as t:
        if t.run is None:
            return t.failed(preset)
        m, wall, cmd = t.metrics, t.wall_s, t.command.split()
    result = {"preset": preset, "command": " ".join(cmd), "wall_s": round(wall, 1),
              "epochs": int(m.get("timing/epochs", 0))}
    result.update({k: round(v, 4) for k, v in sorted(m.items()) if k in (
        "test/accuracy", "test/f1_macro", "test/roc_auc", "baseline/tfidf_logreg/accuracy")})
    print(f"{preset}: test accuracy {result.get('test/accuracy')} (tfidf_logreg "
          f"{result.get('baseline/tfidf_logreg/accuracy')}) in {wall:.1f} s", flush=True)
    return result


def main(argv: list[str]) -> int:
    presets = [a for a in argv if "=" not in a] or list(PRESETS)
    overrides = [a for a in argv if "=" in a]
    results = {p: run(p, overrides) for p in presets}
    bow = results.get("bow", {}).get("test/accuracy")
    ok = True
    for p, r in results.items():
        if p in ("text_sentiment", "text_transformer") and "test/accuracy" in r:
            bars = [r.get("baseline/tfidf_logreg/accuracy"), bow]
            r["pass"] = all(r["test/accuracy"] > b for b in bars if b is not None)
            ok = ok and r["pass"]
    print(json.dumps(list(results.values()), indent=1))
    return 0 if ok and all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
