"""The text task's default on real public corpora, beside the TF-IDF + logistic baseline dlrun prints.

    python scripts/real_data_text.py DATA_DIR                          # every corpus, seeds 42 1 2
    python scripts/real_data_text.py DATA_DIR reviews --seeds 42 7 model=bow

DATA_DIR holds (not shipped with dlrun): reviews/ (the 2,000 movie reviews of the polarity
corpus v2.0, pos/ and neg/ folders of .txt files, ~700 words each) and SMSSpamCollection (5,574
text messages labelled ham or spam, tab-separated with a header `Label<TAB>SMS`). Each corpus
runs as a plain default `dlrun train task=text data=...` in a temporary folder with its own
MLflow store, once per seed (the seed also draws the split); the test accuracy of the network
and of the baseline are read back and reported as mean ± std, with the model `auto` chose.
The bar (issue 19): the network's mean not below the baseline's (exit code 1 when missed).
See docs/text.md for the numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _preset import fmt, over_seeds, parse, trained

CORPORA = {
    "reviews": ("reviews", ["data=text_folder"], "2,000 reviews, ~700 words each, 2 classes"),
    "sms_spam": ("SMSSpamCollection", ["data=csv_text", "data.text_column=SMS", "data.label_column=Label"],
                 "5,574 messages, ~15 words each, 2 classes (13 % spam)"),
}


def run(folder: Path, name: str, overrides: list[str], seed_overrides: list[str]) -> dict:
    path, extra, _ = CORPORA[name]
    seed = [o.split("=", 1)[1] for o in seed_overrides if o.startswith("trainer.seed=")]
    args = ["task=text", *extra, f"data.path={folder / path}", "trainer.progress=false",
            *(f"task.split.seed={s}" for s in seed)]
    with trained(args, [*overrides, *seed_overrides], name) as t:
        if t.run is None:
            return t.failed(name)
        m, tags = t.metrics, t.run.data.tags
        result = {"command": t.command, "fit_s": m.get("timing/fit_seconds", 0.0), "network": m["test/accuracy"],
                  "tfidf_logreg": m.get("baseline/tfidf_logreg/accuracy", float("nan")),
                  "warned": float("loses to" in tags.get("dlrun.warnings", ""))}
        result["model"] = tags.get("dlrun.model_choice") or t.run.data.params.get("model.name", "?")
    return result


def main(argv: list[str]) -> int:
    if not argv or "=" in argv[0] or argv[0].startswith("-"):
        raise SystemExit(__doc__)
    folder = Path(argv[0]).expanduser().resolve()
    names, overrides, seeds = parse(argv[1:])
    missing = [CORPORA[n][0] for n in names or CORPORA if not (folder / CORPORA[n][0]).exists()]
    if missing:
        raise SystemExit(f"{folder}: missing {', '.join(missing)} (see this script's docstring)")
    ok, lines = True, []
    for name in names or list(CORPORA):
        models = []

        def one(extra, name=name, models=models):
            r = run(folder, name, overrides, extra)
            models.append(r.pop("model", "?"))
            return r

        s = over_seeds(name, seeds, one)
        if s["failed"] or not s["mean"]:
            ok = False
            lines.append(f"| {name} | failed: {s['failed'][:1]} |")
            print(lines[-1], flush=True)
            continue
        mean, std = s["mean"], s["std"]
        wins = mean["network"] >= mean["tfidf_logreg"]
        ok = ok and wins
        lines.append(f"| {name} | {CORPORA[name][2]} | {'/'.join(sorted(set(models)))} | "
                     f"{fmt(mean['network'], std['network'])} | {fmt(mean['tfidf_logreg'], std['tfidf_logreg'])} | "
                     f"{'wins' if wins else 'LOSES'} | {mean['fit_s']:.0f} s | {mean['warned']:.2f} |")
        print(lines[-1], flush=True)
        print("   " + s["commands"][0], flush=True)
    print(f"\nseeds {' '.join(map(str, seeds))}; test accuracy mean ± std; columns: corpus | shape | model | "
          "network | TF-IDF + logistic | not below it | fit time | share of runs warned")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
