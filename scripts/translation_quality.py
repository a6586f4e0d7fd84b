"""Train the translation preset with the real CLI and print its test numbers beside the baselines.

    python scripts/translation_quality.py                     # experiment=translation
    python scripts/translation_quality.py trainer.seed=1 data.seed=7

The run is `dlrun train experiment=translation [overrides]` in a temporary folder with its own
MLflow store; the metrics are read back from the run. The quality bar (issue 8): exact match
>= 0.95 on the embedded test set. Exit code 1 when the run misses it.
"""

from __future__ import annotations

import sys

from _preset import trained

BAR = 0.95


def main(overrides: list[str]) -> int:
    with trained(["experiment=translation"], overrides, "translation") as t:
        if t.run is None:
            return 2
        m, wall, cmd = t.metrics, t.wall_s, t.command.split()
        epochs = len(t.client.get_metric_history(t.run.info.run_id, "train/loss"))
    print(f"command: {' '.join(cmd)}   ({epochs} epochs, {wall:.0f} s wall)")
    print(f"{'model':<22}{'exact_match':>12}{'token_acc':>11}{'bleu':>8}")
    for name, prefix in (("seq2seq_transformer", "test"), ("copy", "baseline/copy"),
                         ("most_frequent", "baseline/most_frequent")):
        if f"{prefix}/exact_match" in m:
            print(f"{name:<22}{m[f'{prefix}/exact_match']:>12.4f}{m[f'{prefix}/token_accuracy']:>11.4f}"
                  f"{m[f'{prefix}/bleu']:>8.2f}")
    ok = m["test/exact_match"] >= BAR
    print(f"bar: exact match >= {BAR}: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
