"""Text task: raw strings -> class (sentiment), with a TF-IDF + logistic regression baseline.

Texts are split (stratified, seeded) into train/validation/test. A keras TextVectorization
layer is adapted on the training texts only (max tokens, standardisation; for `bow` also
n-grams and multi-hot / count / TF-IDF output, otherwise padded token ids of a fixed length)
and becomes the first layer of the served model, which takes a column `text` of raw strings
and answers `label` plus `probability_<class>`. The report has accuracy, precision/recall/F1,
a confusion matrix, ROC AUC for two classes, the most confidently wrong test examples, and
scikit-learn's TF-IDF + logistic regression on the same split as baseline/tfidf_logreg/*.

The other text modes are tasks of their own (their data, model and report share nothing with
classification): task=text_generate (char-RNN), task=word2vec, task=translation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlrun.contract import Data, DataInfo, DatasetRecord, Examples, Objective, Report, Served
from dlrun.data.pipeline import split_rows
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks.base import Task

BAG_MODES = ("multi_hot", "count", "tf_idf")


@dataclass
class TextInfo(DataInfo):
    vocab_size: int = 0
    class_values: list[str] | None = None
    model_config: dict | None = None  # model=auto: the chosen model's own config (its YAML)
    chance: float | None = None  # the majority class's share of the training texts


# the issue's `mode=...` names -> (task, preset): the modes are tasks of their own
MODE_TASKS = {"generate": ("text_generate", "char_lstm"), "embed": ("word2vec", "word2vec"),
              "translate": ("translation", "translation")}


@TASKS.register("text", "Raw text -> class (bag of words, embeddings, RNN, CNN, transformer) vs TF-IDF + logistic")
class TextTask(Task):
    name = "text"

    def data(self, cfg, batch_size: int) -> Data:
        import pandas as pd

        mode = str(cfg.task.mode)
        if mode != "classify":
            other = MODE_TASKS.get(mode)
            raise DlrunError(f"task.mode '{mode}' is the task '{other[0]}'" if other else f"unknown task.mode '{mode}'",
                             f"dlrun train task={other[0]} (preset experiment={other[1]})" if other else
                             "valid: classify; generate, embed and translate are tasks text_generate, word2vec, "
                             "translation")
        table = DATA.build(cfg.data, "text")
        frame = table.frame.reset_index(drop=True)
        given_test = table.test is not None
        if given_test:
            frame = pd.concat([frame, table.test], ignore_index=True)
        class_values = sorted(set(frame["label"].astype(str)))
        if len(class_values) < 2:
            raise DlrunError(f"the labels have a single class ({', '.join(class_values) or 'no rows'})",
                             "nothing to learn: check the data")
        y = np.searchsorted(class_values, frame["label"].astype(str).to_numpy()).astype("int32")
        test_rows = len(table.test) if given_test else None
        idx = split_rows(len(frame), y, cfg, bool(cfg.task.split.stratify), test_rows, what="text(s)")
        texts = frame["text"].astype(str).to_numpy(dtype=object)
        model_cfg, notes = choose_model(cfg, texts[idx["train"]])
        length, note = sequence_length(cfg, texts[idx["train"]], model_cfg)
        notes.update(note)
        pre, input_shape, vocab = vectorizer(cfg, texts[idx["train"]], model_cfg, length, y[idx["train"]])

        import tensorflow as tf

        steps = pre.layers[1:]  # the vectorizer (and the NB weighting), applied inside tf.data

        def vec(x):
            for layer in steps:
                x = layer(x)
            return x

        def split_ds(s, shuffle=False):
            ds = tf.data.Dataset.from_tensor_slices((texts[idx[s]].astype(str), y[idx[s]]))
            if shuffle:
                ds = ds.shuffle(len(idx[s]), seed=int(cfg.trainer.seed), reshuffle_each_iteration=True)
            return ds.batch(batch_size).map(lambda x, t: (vec(x), t), num_parallel_calls=tf.data.AUTOTUNE) \
                .prefetch(tf.data.AUTOTUNE)

        n_classes = len(class_values)
        info = TextInfo(name=table.name, input_shape=input_shape, target="binary" if n_classes == 2 else "multiclass",
                        num_classes=n_classes, class_names=class_values, target_column="label",
                        source=table.source, sizes={s: len(i) for s, i in idx.items()}, vocab_size=vocab,
                        class_values=class_values,
                        model_config=_plain(model_cfg) if cfg.model.name == "auto" else None,
                        chance=float(np.bincount(y[idx["train"]]).max() / max(len(idx["train"]), 1)))
        examples, records = {}, []
        for s, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
            rows = frame.iloc[idx[s]][["text", "label"]].reset_index(drop=True)
            examples[s] = Examples(rows[["text"]], rows["label"].astype(str).to_numpy(), rows, table.name, table.source)
            if len(rows):
                records.append(DatasetRecord(table.name, table.source, context, rows, "label"))
        arrays = {f"{k}_{s}": v for s, i in idx.items() for k, v in (("text", texts[i]), ("y", y[i]))}
        return Data(info, split_ds("train", True), split_ds("val") if len(idx["val"]) else None, split_ds("test"),
                    arrays=arrays, examples=examples, records=records, preprocess=pre, warnings=list(table.warnings),
                    notes=notes)

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        return Objective("accuracy", True, chance=getattr(info, "chance", None))

    def serving(self, cfg, model, data: Data) -> Served:
        """A column `text` of raw strings -> label + probability per class."""
        import keras

        from dlrun.serving import class_outputs

        info, pre = data.info, data.preprocess
        out = keras.ops.cast(model(pre.output), "float32")
        outputs = class_outputs(out, info.class_values, binary=info.target == "binary")
        served = keras.Model(pre.input, outputs, name=f"served_{model.name}")
        return Served(served, example=data.examples["test"].inputs.head(5),
                      output_columns={"probability": list(info.class_values)})

    def read(self, cfg, source: str, served: Served | None = None) -> Examples:
        """A CSV (text column by data.text_column, label optional) or a folder of .txt files
        (class sub-folders give the truth)."""
        from pathlib import Path

        from dlrun.data.text import read_csv_text, read_texts

        if not source:
            raise DlrunError("no input", "input=<reviews.csv> or input=<folder of .txt files>")
        p = Path(source).expanduser()
        if p.is_dir():
            frame = read_texts(p)
        else:
            data_cfg = cfg.data if cfg.get("data") is not None and cfg.data.get("name") == "csv_text" else {}
            frame = read_csv_text(p, data_cfg)
        truth = frame["label"].astype(str).to_numpy() if "label" in frame else None
        rows = frame.rename(columns={"label": "truth"})  # written beside the answers' own `label`
        return Examples(frame[["text"]], truth, rows, p.stem, str(p))

    def score(self, cfg, served: Served, examples: Examples) -> Report:
        from dlrun import metrics as scoring
        from dlrun.plots import confusion_matrix
        from dlrun.serving import class_answers

        if examples.targets is None:
            raise DlrunError(f"'{examples.name}' has no label column to score against",
                             "use dlrun predict for texts without labels")
        names = served.output_columns["probability"]
        truth, proba = class_answers(served, examples, what="label")
        values, rows, cm = scoring.classification(truth, proba.argmax(axis=1), names, proba)
        report = Report(values, primary="accuracy")
        report.tables["classes"] = rows
        report.tables["confidently_wrong"] = wrong_table(examples.inputs["text"].to_numpy(), truth, proba, names,
                                                         int(cfg.task.wrong_examples))
        report.figures["confusion_matrix.png"] = confusion_matrix(cm, names)
        return report

    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        from dlrun import metrics as scoring

        report = self.score(cfg, served, data.examples["test"]).prefixed("test")
        a, info = data.arrays, data.info
        rows = [{"model": f"{cfg.model.name} (network)", **_headline(
            {k.split("/", 1)[1]: v for k, v in report.metrics.items()})}]
        network = self.score(cfg, served, data.examples["val"]).metrics["accuracy"] if len(a["y_val"]) else None
        if network is not None and info.chance is not None and network <= info.chance + 0.01:
            report.warnings.append(
                f"validation accuracy {network:.4g} never left chance (the majority class is "
                f"{info.chance:.1%} of the training texts): the network learned nothing; try model=auto or "
                "model=bow, more epochs, or a longer task.sequence_length")
        if "tfidf_logreg" in (cfg.task.get("baselines") or []) and len(np.unique(a["y_train"])) > 1:
            baseline = fit_tfidf_logreg(a["text_train"], a["y_train"])  # once, scored on test and validation
            base = tfidf_scores(baseline, a["text_test"], a["y_test"], info.class_names)
            report.metrics.update(scoring.prefixed("baseline/tfidf_logreg", base))
            rows.append({"model": "tfidf_logreg", **_headline(base)})
            if network is not None:  # never mislead: the network against the baseline on the validation split
                on_val = tfidf_scores(baseline, a["text_val"], a["y_val"], info.class_names)
                line = scoring.losing_to_baseline("accuracy", True, network, {"tfidf_logreg": on_val["accuracy"]},
                                                  "model=bow (words and bigrams into an MLP), or model=auto")
                report.warnings += [line] if line else []
        report.tables["comparison"] = rows
        return report


def _plain(node) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)


def _words(texts) -> np.ndarray:
    """Words per text (whitespace-separated), what the guide's ratio and the lengths count."""
    return np.array([len(str(t).split()) for t in texts])


def choose_model(cfg, train_texts):
    """(the model's config, notes): cfg.model itself, or for model=auto the n-gram or the
    sequence model by Google's text-classification rule, number of samples / median words per
    sample below model.threshold -> n-gram. That guide measured it across many data sets: with
    few or long documents, word order does not pay for the parameters a sequence model needs."""
    from omegaconf import OmegaConf

    from dlrun.config_tree import config_dir

    m = cfg.model
    if m.name != "auto":
        return m, {}
    median = float(np.median(_words(train_texts))) if len(train_texts) else 1.0
    ratio = len(train_texts) / max(median, 1.0)
    chosen = str(m.ngram) if ratio < float(m.threshold) else str(m.sequence)
    chosen_cfg = OmegaConf.load(config_dir() / "model" / f"{chosen}.yaml")
    kind = "an n-gram model" if chosen == str(m.ngram) else "a sequence model"
    reason = (f"{len(train_texts)} training texts / {median:g} median words = {ratio:.1f}, "
              f"{'below' if ratio < float(m.threshold) else 'at least'} {float(m.threshold):g}: {kind}")
    return chosen_cfg, {"dlrun.model_choice": chosen, "dlrun.model_reason": reason}


def sequence_length(cfg, train_texts, model_cfg) -> tuple[int, dict]:
    """(token ids per text, notes): task.sequence_length, or for `auto` the
    task.length_percentile of the training texts' word counts, at most task.max_sequence_length
    (a review of 700 words cut to 40 tokens is its first sentence)."""
    t = cfg.task
    given = t.get("sequence_length", "auto")
    if str(given) != "auto":
        return int(given), {}
    words = _words(train_texts) if len(train_texts) else np.array([1])
    pct, cap = float(t.get("length_percentile", 90)), int(t.get("max_sequence_length", 500))
    at = int(np.ceil(np.percentile(words, pct)))
    length = int(np.clip(at, 8, cap))
    if str(model_cfg.get("output_mode", "int")) in BAG_MODES:
        return length, {}  # a bag reads the whole text
    cut = float(np.mean(words > length))
    why = f"the {pct:g}th percentile of the training texts' words" + (
        f" is {at}, capped by task.max_sequence_length" if at > cap else "")
    return length, {"dlrun.sequence_length": f"{length} tokens ({why}); {cut:.0%} of the training texts are cut"}


def nb_scale(bags: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """|log-count ratio| per bag entry (Wang & Manning's NB weighting, one class against the
    rest, the largest over classes): how strongly an entry tells the classes apart on the
    training texts. Multiplied into the bag, it lets a small network start from the features
    Naive Bayes finds telling. Written here because neither Keras nor scikit-learn has it as
    a transform."""
    scale = np.zeros(bags.shape[1])
    for c in np.unique(y)[-1:] if len(np.unique(y)) == 2 else np.unique(y):
        p = alpha + bags[y == c].sum(axis=0)
        q = alpha + bags[y != c].sum(axis=0)
        scale = np.maximum(scale, np.abs(np.log((p / p.sum()) / (q / q.sum()))))
    return scale


def vectorizer(cfg, train_texts, model_cfg=None, length: int | None = None, train_labels=None):
    """(a Keras model: string column `text` -> TextVectorization output, input shape, vocabulary size).
    Adapted on `train_texts` only: a word that only the validation or test texts have is
    out of vocabulary (id 1, or no entry of the bag)."""
    import keras

    t = cfg.task
    model_cfg = model_cfg if model_cfg is not None else cfg.model
    mode = str(model_cfg.get("output_mode", "int"))
    if mode not in ("int", *BAG_MODES):
        raise DlrunError(f"model.output_mode '{mode}' is unknown", f"valid: int, {', '.join(BAG_MODES)}")
    bag = mode in BAG_MODES
    if bag != (model_cfg.name == "bow"):
        raise DlrunError(f"model '{model_cfg.name}' does not take output_mode '{mode}'",
                         "bow takes multi_hot, count or tf_idf; the others take int")
    length = int(length if length is not None else sequence_length(cfg, train_texts, model_cfg)[0])
    ngrams = model_cfg.get("ngrams") if bag else None
    layer = keras.layers.TextVectorization(
        max_tokens=int(model_cfg.get("max_tokens") or t.get("max_tokens", 20000)), standardize=str(t.get("standardize", "lower_and_strip_punctuation")),
        output_mode=mode, output_sequence_length=None if bag else length,
        ngrams=int(ngrams) if ngrams else None, name="vectorize")
    layer.adapt(np.asarray(train_texts, dtype=str), batch_size=1024)
    vocab = int(layer.vocabulary_size())
    inp = keras.Input(shape=(), dtype="string", name="text")
    out = layer(inp)
    if bag and model_cfg.get("weighting") == "nb" and train_labels is not None:
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices(np.asarray(train_texts, dtype=str)).batch(256)
        bags = np.concatenate([np.asarray(layer(b)) for b in ds])
        scale = np.maximum(nb_scale(bags, np.asarray(train_labels)), 1e-3)
        # x * scale as a stock layer: Normalization computes (x - mean) / sqrt(variance)
        out = keras.layers.Normalization(mean=np.zeros_like(scale), variance=1.0 / scale ** 2, name="nb_weight")(out)
    model = keras.Model({"text": inp}, out, name="vectorizer")
    return model, ((vocab,) if bag else (length,)), vocab


def wrong_table(texts, truth, proba, names, n: int = 10) -> list[dict]:
    """The n test texts the model got wrong with the highest probability for its (wrong) answer."""
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != truth)
    order = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][:n]
    return [{"text": str(texts[i])[:200], "truth": names[truth[i]], "prediction": names[pred[i]],
             "probability": round(float(proba[i, pred[i]]), 4)} for i in order]


def tfidf_logreg(train_texts, y_train, test_texts, y_test, names) -> dict:
    """The classic baseline: scikit-learn TF-IDF (words and bigrams) + logistic regression,
    fitted on the training texts, scored on the test texts."""
    return tfidf_scores(fit_tfidf_logreg(train_texts, y_train), test_texts, y_test, names)


def fit_tfidf_logreg(train_texts, y_train):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=2000, C=4.0))
    return model.fit(list(map(str, train_texts)), y_train)


def tfidf_scores(model, texts, y_true, names) -> dict:
    """Classification metrics of a fitted baseline (a class missing in training has probability 0)."""
    from dlrun import metrics as scoring

    proba = np.zeros((len(texts), len(names)))
    proba[:, model.classes_] = model.predict_proba(list(map(str, texts)))
    return scoring.classification(y_true, proba.argmax(axis=1), names, proba)[0]


def _headline(m: dict) -> dict:
    return {k: m[k] for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc") if k in m}
