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

from _preset import fmt, real_data, trained

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


CHOSEN: dict[str, set] = {}  # corpus -> the models model=auto chose over the seeds


def one(folder: Path, name: str, overrides: list[str], seed_overrides: list[str]) -> dict:
    r = run(folder, name, overrides, seed_overrides)
    CHOSEN.setdefault(name, set()).add(r.pop("model", "?"))
    return r


def row(name: str, s: dict) -> tuple[str, bool]:
    mean, std = s["mean"], s["std"]
    wins = mean["network"] >= mean["tfidf_logreg"]
    return (f"| {name} | {CORPORA[name][2]} | {'/'.join(sorted(CHOSEN.get(name, {'?'})))} | "
            f"{fmt(mean['network'], std['network'])} | {fmt(mean['tfidf_logreg'], std['tfidf_logreg'])} | "
            f"{'wins' if wins else 'LOSES'} | {mean['fit_s']:.0f} s | {mean['warned']:.2f} |"), wins


def main(argv: list[str]) -> int:
    return real_data(argv, __doc__, {n: c[0] for n, c in CORPORA.items()}, one, row,
                     "test accuracy mean ± std; columns: corpus | shape | model | network | TF-IDF + logistic | "
                     "not below it | fit time | share of runs warned")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
