"""Translation task: raw source strings -> target strings with an encoder-decoder transformer.

Pairs (dlrun/data/parallel.py: generated dates by default, or a source<TAB>target file) are
split (seeded) into train/validation/test. Two keras TextVectorization layers, adapted on the
training pairs only, turn sources and targets into token ids (words or characters, per
data.source_split / target_split). Training uses teacher forcing: the decoder reads the true
target shifted right behind a start id and predicts every next token at once (causal
self-attention keeps it from seeing ahead); loss and token accuracy skip the padding through
sample weights. The served model takes a column `text` of raw strings and answers `translation`
by greedy decoding inside the model. The report: exact match, token accuracy and corpus BLEU
(sacrebleu) of the greedy translations on the test part, a table of sample translations, and
the copy-the-source and most-frequent-target baselines on the same split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlrun.contract import Data, DataInfo, DatasetRecord, Examples, Objective, Report, Served
from dlrun.data.pipeline import split_rows
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks.base import Task

SPLITS = ("whitespace", "character")
STANDARDIZE = ("lower_and_strip_punctuation", "lower", "strip_punctuation", "none")
# TextVectorization's own punctuation pattern (keras DEFAULT_STRIP_REGEX), to standardise
# references the way the target vectorizer did before comparing them with translations
STRIP = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')


@dataclass
class TranslationInfo(DataInfo):
    source_vocab: int = 0  # TextVectorization vocabulary sizes (0 = padding, 1 = unknown)
    target_vocab: int = 0
    source_length: int = 0  # token ids per source (padded / cut)
    target_length: int = 0  # decoder positions: target tokens + 1 (start in, end out)
    target_tokens: list[str] = field(default_factory=list)  # the target vocabulary, id order
    sides: dict = field(default_factory=dict)  # tokenisation of "source" and "target" (split, standardize)

    @property
    def output_vocab(self) -> int:  # target tokens + start id + end id
        return self.target_vocab + 2


def _side(cfg, side: str) -> dict:
    """Tokenisation of one side from the data config: split and standardisation."""
    split = str(cfg.data.get(f"{side}_split", "whitespace"))
    standardize = str(cfg.data.get(f"{side}_standardize", "lower_and_strip_punctuation"))
    if split not in SPLITS:
        raise DlrunError(f"data.{side}_split: unknown value '{split}'", f"valid: {', '.join(SPLITS)}")
    if standardize not in STANDARDIZE:
        raise DlrunError(f"data.{side}_standardize: unknown value '{standardize}'",
                         f"valid: {', '.join(STANDARDIZE)}")
    return {"split": split, "standardize": standardize}


def _vectorizer(texts, side: dict, max_tokens: int, length: int, name: str):
    import keras

    layer = keras.layers.TextVectorization(
        max_tokens=max_tokens, standardize=None if side["standardize"] == "none" else side["standardize"],
        split=side["split"], output_sequence_length=length, name=name)
    layer.adapt(np.asarray(texts, dtype=str), batch_size=1024)
    return layer


def standardized(text: str, side: dict) -> str:
    """`text` as the target vectorizer sees it, joined back: what a perfect translation reads."""
    s = side["standardize"]
    if "lower" in s:
        text = text.lower()
    if "strip_punctuation" in s:
        text = STRIP.sub("", text)
    return " ".join(text.split()) if side["split"] == "whitespace" else text


def _tokens(text: str, split: str) -> list[str]:
    return text.split() if split == "whitespace" else list(text)


def _length(texts, side: dict, cap: int) -> int:
    """Tokens of the longest text (after standardisation), at most `cap`."""
    return max(1, min(cap, max((len(_tokens(standardized(t, side), side["split"])) for t in texts), default=1)))


@TASKS.register("translation", "Source text -> target text: encoder-decoder transformer, exact match and BLEU")
class TranslationTask(Task):
    name = "translation"

    def data(self, cfg, batch_size: int) -> Data:
        import pandas as pd

        table = DATA.build(cfg.data, "translation")
        frame = table.frame.reset_index(drop=True)
        given_test = table.test is not None
        if given_test:
            frame = pd.concat([frame, table.test], ignore_index=True)
        frame["source"] = frame["source"].astype(str)
        frame["target"] = frame["target"].astype(str)
        t = cfg.task
        idx = split_rows(len(frame), None, cfg, False, len(table.test) if given_test else None, what="pair(s)")
        src_side, tgt_side = _side(cfg, "source"), _side(cfg, "target")
        src, tgt = frame["source"].to_numpy(dtype=object), frame["target"].to_numpy(dtype=object)
        train_src, train_tgt = src[idx["train"]], tgt[idx["train"]]
        cap = int(t.get("max_length", 50))
        s_len = int(t.source_length) if t.get("source_length") else _length(train_src, src_side, cap)
        t_len = int(t.target_length) if t.get("target_length") else _length(train_tgt, tgt_side, cap)
        max_tokens = int(t.get("max_tokens", 20000))
        src_vec = _vectorizer(train_src, src_side, max_tokens, s_len, "vectorize_source")
        tgt_vec = _vectorizer(train_tgt, tgt_side, max_tokens, t_len, "vectorize_target")
        info = TranslationInfo(name=table.name, input_shape=(s_len,), target="translation", target_column="target",
                               source=table.source, sizes={s: len(i) for s, i in idx.items()},
                               source_vocab=int(src_vec.vocabulary_size()), target_vocab=int(tgt_vec.vocabulary_size()),
                               source_length=s_len, target_length=t_len + 1,
                               target_tokens=list(tgt_vec.get_vocabulary()),
                               sides={"source": src_side, "target": tgt_side})
        import keras

        text = keras.Input(shape=(), dtype="string", name="text")
        pre = keras.Model({"text": text}, src_vec(text), name="vectorizer")
        start, end = info.target_vocab, info.target_vocab + 1

        import tensorflow as tf

        def teacher_forcing(s, y):
            """(source ids, decoder input = start + target, decoder output = target + end, weights)."""
            ids = tgt_vec(y)  # (B, t_len), 0-padded
            n = tf.math.count_nonzero(ids, axis=1)
            col = tf.zeros_like(ids[:, :1])
            dec_in = tf.concat([col + start, ids], axis=1)
            dec_out = tf.concat([ids, col], axis=1) + tf.one_hot(n, t_len + 1, dtype=ids.dtype) * end
            return {"source": src_vec(s), "target_in": dec_in}, dec_out, tf.cast(dec_out > 0, "float32")

        def split_ds(s, shuffle=False):
            ds = tf.data.Dataset.from_tensor_slices((src[idx[s]].astype(str), tgt[idx[s]].astype(str)))
            if shuffle:
                ds = ds.shuffle(len(idx[s]), seed=int(cfg.trainer.seed), reshuffle_each_iteration=True)
            return ds.batch(batch_size).map(teacher_forcing, num_parallel_calls=tf.data.AUTOTUNE) \
                .prefetch(tf.data.AUTOTUNE)

        examples, records = {}, []
        for s, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
            rows = frame.iloc[idx[s]][["source", "target"]].reset_index(drop=True)
            examples[s] = Examples(pd.DataFrame({"text": rows["source"]}), rows["target"].to_numpy(), rows,
                                   table.name, table.source)
            if len(rows):
                records.append(DatasetRecord(table.name, table.source, context, rows, "target"))
        return Data(info, split_ds("train", True), split_ds("val") if len(idx["val"]) else None, split_ds("test"),
                    arrays={"source_train": train_src, "target_train": train_tgt},
                    examples=examples, records=records, preprocess=pre, warnings=list(table.warnings))

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        return Objective("token_accuracy", True)  # teacher-forced, per epoch; the test report decodes

    def build_model(self, cfg, info: DataInfo):
        import keras

        from dlrun.models import build_model
        from dlrun.training.compile import make_optimizer

        model = build_model(cfg.model, info, task=self.name)
        model.compile(optimizer=make_optimizer(cfg.trainer, info.steps_per_epoch),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="token_accuracy")],
                      jit_compile=bool(cfg.trainer.jit_compile),
                      steps_per_execution=int(cfg.trainer.steps_per_execution))
        return model

    def fit(self, cfg, model, data: Data, run):
        if str(cfg.trainer.loop) != "fit":
            raise DlrunError(f"task=translation trains with trainer.loop=fit, not '{cfg.trainer.loop}'",
                             "its batches carry sample weights (padding weighs 0); the custom loop takes (x, y)")
        return super().fit(cfg, model, data, run)

    def serving(self, cfg, model, data: Data) -> Served:
        """A column `text` of raw source strings -> `translation` (greedy decoding in the model)."""
        import keras

        from dlrun.models._seq2seq_layers import GreedyDecode

        info, pre = data.info, data.preprocess
        tgt = info.sides["target"]
        decode = GreedyDecode(model.get_layer("encoder"), model.get_layer("decoder"), info.target_tokens,
                              info.target_vocab,
                              info.target_vocab + 1, info.target_length,
                              "" if tgt["split"] == "character" else " ", name="greedy_decode")
        served = keras.Model(pre.input, {"translation": decode(pre.output)}, name="served_translation")
        return Served(served, example=data.examples["test"].inputs.head(5),
                      meta=dict(info.sides))

    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        report = self.score(cfg, served, data.examples["test"]).prefixed("test")
        rows = [{"model": f"{cfg.model.name} (greedy)", **_headline(report.metrics, "test/")}]
        test = data.examples["test"]
        sources, refs = test.rows["source"].to_numpy(), test.targets
        side = served.meta["target"]
        base = cfg.task.get("baselines") or []
        answers = {"copy": [standardized(str(x), side) for x in sources],  # as the target side is written
                   "most_frequent": [_most_frequent(data.arrays["target_train"])] * len(refs)}
        for name in base:
            if name not in answers:
                raise DlrunError(f"task.baselines: unknown baseline '{name}'", f"valid: {', '.join(answers)}")
            m = scores(refs, answers[name], side, str(cfg.task.bleu_tokenize))
            report.metrics.update({f"baseline/{name}/{k}": v for k, v in m.items()})
            rows.append({"model": name, **_headline(m)})
        report.tables["comparison"] = rows
        return report

    def score(self, cfg, served: Served, examples: Examples) -> Report:
        from dlrun.serving import predict_frame

        if examples.targets is None:
            raise DlrunError(f"'{examples.name}' has no reference translations to score against",
                             "give source<TAB>target lines, or use dlrun predict")
        out = predict_frame(served, examples)["translation"].astype(str).tolist()
        side = served.meta["target"]
        refs = [str(r) for r in examples.targets]
        report = Report(scores(refs, out, side, str(cfg.task.bleu_tokenize)), primary="exact_match")
        sources = examples.inputs["text"].astype(str).tolist()
        n = int(cfg.task.samples)
        report.tables["samples"] = [
            {"source": s, "reference": standardized(r, side), "output": o, "correct": o == standardized(r, side)}
            for s, r, o in zip(sources[:n], refs[:n], out[:n], strict=True)]
        wrong = [i for i, (r, o) in enumerate(zip(refs, out, strict=True)) if o != standardized(r, side)][:n]
        report.tables["wrong"] = [{"source": sources[i], "reference": standardized(refs[i], side), "output": out[i]}
                                  for i in wrong]
        return report

    def read(self, cfg, source: str, served: Served | None = None) -> Examples:
        """Sources to translate: a text file with one source per line, or source<TAB>reference
        lines (references are scored by dlrun eval); or a CSV with a `text` (or `source`) column
        and an optional `target` (or `reference`) column."""
        from dlrun.data.parallel import read_parallel

        if not source:
            raise DlrunError("no input", "input=<file.txt|.tsv with a source per line, or .csv with a text column>")
        p = Path(source).expanduser()
        if p.suffix.lower() == ".csv":
            frame = _read_csv(p)
        elif p.is_file() and any("\t" in line for line in _lines(p)):
            frame = read_parallel(p)
        else:
            lines = [line.strip() for line in _lines(p) if line.strip()]
            if not lines:
                raise DlrunError(f"input '{source}' has no lines to translate")
            import pandas as pd

            frame = pd.DataFrame({"source": lines})
        truth = frame["target"].astype(str).to_numpy() if "target" in frame else None
        rows = frame.rename(columns={"target": "reference"})
        import pandas as pd

        return Examples(pd.DataFrame({"text": frame["source"].astype(str)}), truth, rows, p.stem, str(p))


def scores(references, outputs, side: dict, bleu_tokenize: str = "auto") -> dict:
    """exact_match, token_accuracy and BLEU (sacrebleu corpus BLEU, 0-100) of `outputs` against
    `references` standardised as the target vectorizer does. Token accuracy compares position by
    position over the longer of reference and output, so missing and extra tokens both count."""
    from sacrebleu.metrics import BLEU

    refs = [standardized(str(r), side) for r in references]
    outs = [str(o) for o in outputs]
    hits = total = 0
    for r, o in zip(refs, outs, strict=True):
        rt, ot = _tokens(r, side["split"]), _tokens(o, side["split"])
        hits += sum(a == b for a, b in zip(rt, ot, strict=False))
        total += max(len(rt), len(ot), 1)
    tokenize = ("char" if side["split"] == "character" else "13a") if bleu_tokenize == "auto" else bleu_tokenize
    bleu = BLEU(tokenize=tokenize).corpus_score(outs, [refs]).score
    return {"exact_match": float(np.mean([r == o for r, o in zip(refs, outs, strict=True)])),
            "token_accuracy": hits / max(total, 1), "bleu": float(bleu)}


def _most_frequent(targets) -> str:
    values, counts = np.unique(np.asarray(targets, dtype=str), return_counts=True)
    return str(values[np.argmax(counts)])


def _headline(m: dict, prefix: str = "") -> dict:
    return {k: round(float(m[f"{prefix}{k}"]), 4) for k in ("exact_match", "token_accuracy", "bleu")}


def _lines(p: Path) -> list[str]:
    if not p.exists():
        raise DlrunError(f"input '{p}' does not exist")
    if p.is_dir():
        raise DlrunError(f"input '{p}' is a folder", "give a .txt, .tsv or .csv file")
    return p.read_text(encoding="utf-8", errors="replace").splitlines()


def _read_csv(p: Path):
    from dlrun.data.csv import read_csv

    frame = read_csv(p, sep="auto", header=True, min_columns=1)
    names = {str(c).lower(): c for c in frame.columns}
    text = names.get("text", names.get("source"))
    if text is None:
        raise DlrunError(f"'{p}' has no column 'text' or 'source'", f"columns: {', '.join(map(str, frame.columns))}")
    out = {"source": frame[text].fillna("").astype(str)}
    ref = names.get("target", names.get("reference"))
    if ref is not None:
        out["target"] = frame[ref].fillna("").astype(str)
    import pandas as pd

    return pd.DataFrame(out)
