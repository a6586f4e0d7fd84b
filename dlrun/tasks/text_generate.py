"""Char-level text generation: a character language model (char-RNN) on one corpus.

The corpus (data=pydoc_topics, the help texts that ship with Python; data=text_file) is split
by position: the first part trains, then validation, then test (task.val_size, task.test_size
of the characters). The characters of the training part are the vocabulary (id 0 stands for a
character only the other parts have). Training windows of `task.window` characters start every
`task.step` characters (tf.data: a range of start offsets mapped to slices of one tensor); the
network predicts the next character at every position (sparse softmax cross-entropy).

Report: cross-entropy in bits per character and perplexity on the validation and test text
(scored in long chunks, `task.eval_length`, so the network has context), beside character
n-gram models counted on the training part (add-one or interpolated Kneser-Ney,
`task.ngram`) on the same text, and samples from `task.sample.start` at several temperatures
(also every `task.sample.every` epochs during training) as text artifacts.

The served model takes a column `prompt` of raw strings and answers `generated` and `text`
(prompt + generated); `dlrun predict run_id=... prompt="..." length=200 temperature=0.5`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from dlrun.contract import Data, DataInfo, DatasetRecord, Examples, Objective, Report, Served
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks.base import Task

SMOOTHING = ("add_one", "kneser_ney")
SPLITS = (("train", "training"), ("val", "validation"), ("test", "testing"))


@dataclass
class CorpusInfo(DataInfo):
    vocabulary: list[str] = field(default_factory=list)  # id i + 1 is vocabulary[i]; id 0 unknown
    chars: dict[str, int] = field(default_factory=dict)  # characters per split


@TASKS.register("text_generate", "Char-level language model (LSTM/GRU): samples, bits/char vs n-gram baselines")
class TextGenerateTask(Task):
    name = "text_generate"

    def __init__(self):
        self.samples_by_epoch: list[str] = []  # filled during fit, logged with the report

    # -- data -----------------------------------------------------------------------------
    def data(self, cfg, batch_size: int) -> Data:
        import pandas as pd
        import tensorflow as tf

        t = cfg.task
        corpus = DATA.build(cfg.data, self.name)
        text = corpus.text[: int(t.fast_chars)] if cfg.trainer.fast else corpus.text
        window = int(t.window)
        step = int(t.get("step") or window)
        if step < 1:
            raise DlrunError(f"task.step must be an integer >= 1, got {t.step}")
        val_size, test_size = float(t.val_size), float(t.test_size)
        if val_size <= 0 or val_size + test_size >= 1:
            raise DlrunError(f"task.val_size ({val_size}) must be > 0 and with task.test_size ({test_size}) below 1")
        a, b = round(len(text) * (1 - val_size - test_size)), round(len(text) * (1 - test_size))
        texts = {"train": text[:a], "val": text[a:b], "test": text[b:]}
        for s in ("train", "val"):
            if len(texts[s]) < window + 1:
                raise DlrunError(f"the {s} part of '{corpus.name}' has {len(texts[s])} characters, fewer than "
                                 f"task.window + 1 = {window + 1}", "use a longer text or a smaller task.window")
        vocabulary = sorted(set(texts["train"]))
        ids = {s: encode(x, vocabulary) for s, x in texts.items()}

        def windows(s: str, shuffle: bool = False):
            source = tf.constant(ids[s], tf.int32)
            n = (len(ids[s]) - window - 1) // step + 1
            ds = tf.data.Dataset.range(n)
            if shuffle:
                ds = ds.shuffle(n, seed=int(cfg.trainer.seed), reshuffle_each_iteration=True)

            def cut(i):
                start = tf.cast(i, tf.int32) * step
                return source[start: start + window], source[start + 1: start + window + 1]

            return ds.map(cut, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE), n

        train, n_train = windows("train", shuffle=True)
        val, n_val = windows("val")
        info = CorpusInfo(name=corpus.name, input_shape=(window,), target="next_char", num_classes=len(vocabulary) + 1,
                          source=corpus.source, sizes={"train": n_train, "val": n_val}, vocabulary=vocabulary,
                          chars={s: len(x) for s, x in texts.items()})
        examples, records = {}, []
        for s, context in SPLITS:
            if not texts[s]:
                continue
            lines = pd.DataFrame({"line": texts[s].split("\n")})
            examples[s] = Examples(pd.DataFrame({"prompt": [texts[s][:40]]}), texts[s], lines, corpus.name,
                                   corpus.source)
            records.append(DatasetRecord(corpus.name, corpus.source, context, lines))
        return Data(info, train, val, None, arrays={**{f"ids_{s}": v for s, v in ids.items()},
                                                     **{f"text_{s}": v for s, v in texts.items()}},
                    examples=examples, records=records)

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        return Objective("loss", maximize=False)  # validation cross-entropy (nats per character)

    def build_model(self, cfg, info: DataInfo):
        import keras

        from dlrun.models import build_model
        from dlrun.training.compile import compile_model

        model = build_model(cfg.model, info, task=self.name)
        compile_model(model, cfg, info, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        return model

    def fit(self, cfg, model, data: Data, run):
        from dlrun.training.handle import keras_fit

        every = int(cfg.task.sample.get("every") or 0)
        if every:
            import keras

            task = self

            class Samples(keras.callbacks.Callback):
                """Samples from the start string every `every` epochs, kept for the report."""

                def on_epoch_end(self, epoch, logs=None):
                    if (epoch + 1) % every == 0 and epoch + 1 < int(cfg.trainer.epochs):
                        text = samples_text(cfg, model, data.info.vocabulary, f"after epoch {epoch + 1}")
                        task.samples_by_epoch.append(text)
                        if run.is_chief:
                            (run.workdir / "samples.txt").write_text("\n".join(task.samples_by_epoch))

            run.callbacks.append(Samples())
        return keras_fit(cfg, model, data, run)

    def serving(self, cfg, model, data: Data) -> Served:
        """A column `prompt` of raw strings -> `generated` and `text` (prompt + generated)."""
        import pandas as pd

        from dlrun.models._char_layers import served_generator

        g = cfg.task.generate
        served = served_generator(model, data.info.vocabulary, int(g.length), float(g.temperature), int(g.seed))
        return Served(served, example=pd.DataFrame({"prompt": [str(cfg.task.sample.start)]}),
                      meta={"vocabulary_size": len(data.info.vocabulary) + 1})

    # -- report ---------------------------------------------------------------------------
    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        report = Report(primary="test/bits_per_char" if "test" in data.examples else "val/bits_per_char")
        splits = [s for s in ("val", "test") if s in data.examples]
        rows = {"network": {"model": f"{cfg.model.name} (network)"}}
        for s in splits:
            m = self.score(cfg, served, data.examples[s]).metrics
            report.metrics.update({f"{s}/{k}": v for k, v in m.items() if k != "characters"})
            rows["network"].update({f"{s}_bits_per_char": m["bits_per_char"], f"{s}_perplexity": m["perplexity"]})
        vocabulary, train = data.info.vocabulary, data.arrays["text_train"]
        for spec in cfg.task.ngram:
            order, smoothing = int(spec.order), str(spec.smoothing)
            lm = CharNgram(train, order, smoothing, vocabulary)
            name = f"ngram{order}_{'kn' if smoothing == 'kneser_ney' else smoothing}"
            rows[name] = {"model": f"{order}-gram, {smoothing.replace('_', ' ')}"}
            for s in splits:
                bits = lm.bits_per_char(data.arrays[f"text_{s}"])
                prefix = f"baseline/{name}/" + ("" if s == "test" else "val_")
                report.metrics.update({f"{prefix}bits_per_char": bits, f"{prefix}perplexity": 2.0 ** bits})
                rows[name].update({f"{s}_bits_per_char": bits, f"{s}_perplexity": 2.0 ** bits})
        report.tables["comparison"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                                       for r in rows.values()]
        generator = served.model.get_layer("generator")
        report.texts["samples.txt"] = samples_text(cfg, generator.net, vocabulary, "after training")
        if self.samples_by_epoch:
            report.texts["samples_by_epoch.txt"] = "\n".join(self.samples_by_epoch)
        return report

    def score(self, cfg, served: Served, examples: Examples) -> Report:
        """Cross-entropy of the network on the text of `examples` (unprefixed names)."""
        if not isinstance(examples.targets, str) or len(examples.targets) < 2:
            raise DlrunError(f"'{examples.name}' has no text to score", "give a text file of two characters or more")
        generator = served.model.get_layer("generator")
        ids = encode(examples.targets, generator.vocabulary)
        nats = network_nats(generator.net, ids, int(cfg.task.eval_length))
        bits = nats / math.log(2)
        return Report({"bits_per_char": bits, "perplexity": 2.0 ** bits, "cross_entropy": nats,
                       "characters": float(len(ids) - 1)}, primary="bits_per_char")

    # -- eval / predict on a user's inputs ------------------------------------------------
    def read(self, cfg, source: str, served: Served | None = None) -> Examples:
        """`prompt=` (predict); or a file: a CSV with a `prompt` column, or a text file (eval
        scores its text; predict continues each non-empty line)."""
        import pandas as pd

        from dlrun.data.corpus import read_text_file

        if not source:
            prompt = (cfg.get("predict") or {}).get("prompt")
            if prompt is None:
                raise DlrunError("nothing to continue", 'give prompt="Some text" or input=<prompts.txt>')
            frame = pd.DataFrame({"prompt": [str(prompt)]})
            return Examples(frame, None, frame, "prompt", "prompt")
        from pathlib import Path

        p = Path(source).expanduser()
        if p.suffix.lower() == ".csv":
            from dlrun.data.csv import column, read_csv

            table = read_csv(p, min_columns=1)
            col = column(table, "prompt", p, "the prompt column")
            frame = pd.DataFrame({"prompt": table[col].fillna("").astype(str)})
            return Examples(frame, None, frame, p.stem, str(p))
        text = read_text_file(p)
        frame = pd.DataFrame({"prompt": [line for line in text.split("\n") if line.strip()]})
        return Examples(frame, text, frame, p.stem, str(p))

    def predict(self, cfg, served: Served, examples: Examples):
        from dlrun.serving import predict_frame

        options = cfg.get("predict") or {}
        settings = {}
        for key, kind, low in (("length", int, 1), ("temperature", float, 0.0), ("seed", int, 0)):
            if options.get(key) is None:
                continue
            try:
                value = kind(options[key])
            except ValueError:
                value = None
            if value is None or value < low:
                raise DlrunError(f"{key} must be {'an integer' if kind is int else 'a number'} >= {low}, "
                                 f"got '{options[key]}'")
            settings[key] = value
        served.model.get_layer("generator").set(**settings)
        return predict_frame(served, examples.inputs)


# -- helpers --------------------------------------------------------------------------------


def encode(text: str, vocabulary: list[str]) -> np.ndarray:
    """Character ids (vectorised, no loop per character): vocabulary[i] -> i + 1, others -> 0.
    `vocabulary` is sorted, as the served model's StringLookup has it."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.frombuffer("".join(vocabulary).encode("utf-32-le"), dtype=np.uint32)
    at = np.minimum(np.searchsorted(table, codes), len(table) - 1)
    return np.where(table[at] == codes, at + 1, 0).astype("int32")


def network_nats(net, ids: np.ndarray, chunk: int, batch: int = 16) -> float:
    """Mean next-character cross-entropy (nats) of `net` on ids[1:] given what precedes them,
    scored in chunks of `chunk` characters (the state restarts at each chunk)."""
    x, y = ids[:-1], ids[1:]
    n = len(y)
    k = -(-n // chunk)
    pad = k * chunk - n
    x = np.pad(x, (0, pad)).reshape(k, chunk)
    y = np.pad(y, (0, pad)).reshape(k, chunk)
    w = np.pad(np.ones(n), (0, pad)).reshape(k, chunk)
    total = 0.0
    for i in range(0, k, batch):  # a loop over batches of chunks, not characters
        logits = np.asarray(net.predict(x[i: i + batch], verbose=0, batch_size=batch), dtype="float64")
        logits -= logits.max(axis=-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        picked = np.take_along_axis(logp, y[i: i + batch, :, None], axis=-1)[..., 0]
        total -= float((picked * w[i: i + batch]).sum())
    return total / n


def samples_text(cfg, net, vocabulary, title: str) -> str:
    """Samples from task.sample.start at each of task.sample.temperatures, as one text."""
    from dlrun.models._char_layers import served_generator
    from dlrun.serving import run

    s = cfg.task.sample
    model = served_generator(net, vocabulary, int(s.length), 1.0, int(cfg.task.generate.seed))
    layer = model.get_layer("generator")
    parts = [f"=== samples {title} (start {str(s.start)!r}, {int(s.length)} characters)"]
    for temperature in s.temperatures:
        layer.set(temperature=float(temperature))
        text = run(model, {"prompt": np.array([str(s.start)], dtype=object)})
        parts.append(f"--- temperature {float(temperature):g}\n{text['text'][0]}\n")
    return "\n".join(parts)


class CharNgram:
    """A character n-gram language model counted on a training text, smoothed with add-one
    (Laplace) or interpolated Kneser-Ney (one discount per order, D = n1 / (n1 + 2 n2)).

    Hand-written: nltk.lm (KneserNeyInterpolated) is not a dependency and scores through
    per-call Python recursion over its counters (minutes for one validation text); kenlm needs
    a compiled binary and is word-level oriented. Here the counts are Counters of string
    slices and a score is a few dict look-ups per order.
    The vocabulary is the training characters plus one unknown symbol (as the network's);
    characters outside it count as that symbol.
    """

    UNKNOWN = "\uffff"

    def __init__(self, text: str, order: int, smoothing: str = "kneser_ney", vocabulary=None):
        if smoothing not in SMOOTHING:
            raise DlrunError(f"n-gram smoothing '{smoothing}' is unknown", f"valid: {', '.join(SMOOTHING)}")
        if order < 1:
            raise DlrunError(f"n-gram order must be >= 1, got {order}")
        self.order, self.smoothing = int(order), smoothing
        self.known = set(vocabulary if vocabulary is not None else text)
        self.V = len(self.known) + 1
        text = self._map(text)
        raw = {k: Counter(text[i: i + k] for i in range(len(text) - k + 1)) for k in range(1, self.order + 1)}
        if smoothing == "add_one":
            self.tables = raw
        else:  # lower orders count distinct left neighbours (continuation counts)
            self.tables = {self.order: raw[self.order]}
            for k in range(1, self.order):
                self.tables[k] = Counter(g[1:] for g in raw[k + 1])
        self.denom, self.types, self.discount = {}, {}, {}
        for k, table in self.tables.items():
            denom, types = Counter(), Counter()
            for g, c in table.items():
                denom[g[:-1]] += c
                types[g[:-1]] += 1
            self.denom[k], self.types[k] = denom, types
            n1 = sum(1 for c in table.values() if c == 1)
            n2 = sum(1 for c in table.values() if c == 2)
            self.discount[k] = min(0.9, max(0.1, n1 / (n1 + 2 * n2) if n1 else 0.5))

    def _map(self, text: str) -> str:
        return "".join(c if c in self.known else self.UNKNOWN for c in text)

    def prob(self, context: str, char: str) -> float:
        """P(char | the last order - 1 characters of context)."""
        context = context[len(context) - self.order + 1:] if self.order > 1 else ""
        return self._p(context, char)

    def _p(self, h: str, w: str) -> float:
        k = len(h) + 1
        table, denom = self.tables[k], self.denom[k].get(h, 0)
        if self.smoothing == "add_one":
            return (table.get(h + w, 0) + 1) / (denom + self.V)
        lower = self._p(h[1:], w) if h else 1.0 / self.V
        if denom == 0:
            return lower
        d = self.discount[k]
        return max(table.get(h + w, 0) - d, 0.0) / denom + d * self.types[k][h] / denom * lower

    def bits_per_char(self, text: str) -> float:
        """Mean -log2 P of text[1:], each character given the ones before it in `text`."""
        text = self._map(text)
        n = self.order - 1
        total = sum(-math.log2(self.prob(text[max(0, j - n): j], text[j])) for j in range(1, len(text)))
        return total / max(len(text) - 1, 1)
