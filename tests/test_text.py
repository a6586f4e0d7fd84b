"""Text task: the review generator, loaders, vectorizer on train only, padding mask, and an
end-to-end run whose logged model answers raw strings."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.data.text import reviews_frame
from dlrun.errors import DlrunError
from dlrun.registry import TASKS


def _data(compose, *overrides):
    from dlrun.config import validate

    cfg = validate(compose("task=text", *overrides))
    return cfg, TASKS.get("text")().data(cfg, 32)


def test_generator_is_deterministic_and_uses_negation_and_contrast():
    a, b, c = reviews_frame(500, 1), reviews_frame(500, 1), reviews_frame(500, 2)
    assert a.equals(b) and not a.equals(c)
    assert set(a.label) == {"negative", "positive"}
    text = " ".join(a.text)
    assert " but " in text and (" not " in text or " never " in text)
    assert set(reviews_frame(300, 1, neutral=True).label) == {"negative", "positive", "neutral"}


def test_bag_of_words_cannot_reach_100_percent():
    from dlrun.tasks.text import tfidf_logreg

    f = reviews_frame(3000, 5, noise=0.0)
    y = (f.label == "positive").to_numpy().astype(int)
    m = tfidf_logreg(f.text[:2400], y[:2400], f.text[2400:], y[2400:], ["negative", "positive"])
    assert 0.6 < m["accuracy"] < 0.97  # word counts help but cannot read negation and "but" fully


def test_vectorizer_is_adapted_on_the_training_split_only(compose):
    cfg, d = _data(compose, "data.n=400", "model=embedding_pool", "task.sequence_length=40")
    vocab = set(d.preprocess.layers[-1].get_vocabulary())
    train_words = {w for t in d.arrays["text_train"] for w in t.split()}
    assert vocab - {"", "[UNK]"} <= train_words | {"."}
    from dlrun.tasks.text import vectorizer

    pre, shape, _ = vectorizer(cfg, np.array(["good film", "bad film"]))
    ids = np.asarray(pre({"text": np.array(["zebra good"])}))
    assert ids[0, 0] == 1 and ids[0, 1] > 1  # a word not in training is out of vocabulary (id 1)
    assert shape == (40,) and d.info.sizes["test"] == 80


def test_csv_and_folder_loaders(compose, tmp_path):
    rows = [("a great film", "pos"), ("an awful film", "neg")] * 20
    csv = tmp_path / "r.csv"
    csv.write_text("id;review;sentiment\n" + "".join(f"{i};{t};{y}\n" for i, (t, y) in enumerate(rows)))
    _, d = _data(compose, "data=csv_text", f"data.path={csv}", "data.text_column=review", "data.label_column=2")
    assert d.info.class_names == ["neg", "pos"] and sum(d.info.sizes.values()) == 40
    for cls in ("neg", "pos"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "f" / cls / f"{i}.txt").write_text(f"{cls} text number {i}")
    _, d = _data(compose, "data=text_folder", f"data.path={tmp_path / 'f'}")
    assert d.info.class_names == ["neg", "pos"]
    assert all(t.split()[0] == y for t, y in zip(d.examples["train"].rows.text, d.examples["train"].rows.label,
                                                   strict=True))
    with pytest.raises(DlrunError, match="class sub-folder"):
        _data(compose, "data=text_folder", f"data.path={tmp_path / 'f' / 'neg'}")


def test_unknown_model_for_text_lists_the_valid_ones(compose):
    from dlrun.models import build_model

    cfg, d = _data(compose, "data.n=200")
    with pytest.raises(DlrunError, match="transformer"):
        build_model(compose("task=text", "model=lstm").model, d.info, task="text")


def test_encoder_block_ignores_padding_positions():
    import keras

    from dlrun.models._text_layers import EncoderBlock

    block = EncoderBlock(2, 4, 8, dropout=0.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 5, 8)).astype("float32")
    mask = np.array([[True, True, True, False, False]])
    y1 = np.asarray(block(keras.ops.convert_to_tensor(x), mask=mask))
    x2 = x.copy()
    x2[:, 3:] = rng.normal(size=(1, 2, 8))
    y2 = np.asarray(block(keras.ops.convert_to_tensor(x2), mask=mask))
    assert np.allclose(y1[:, :3], y2[:, :3], atol=1e-5)
    y3 = np.asarray(block(keras.ops.convert_to_tensor(x2), mask=np.ones((1, 5), bool)))
    assert not np.allclose(y1[:, :3], y3[:, :3], atol=1e-3)  # without the mask the padding matters


def test_train_then_predict_raw_strings_from_the_logged_model(run_dlrun, runs, workdir, tmp_path):
    run_dlrun("train", "task=text", "trainer=smoke")
    run = runs()[0]
    m = run.data.metrics
    assert {"test/accuracy", "test/roc_auc", "baseline/tfidf_logreg/accuracy"} <= set(m)
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    pred = model.predict(pd.DataFrame({"text": ["a great film", "the plot is not good", "zzz unseen words"]}))
    assert len(pred) == 3 and set(pred.label) <= {"negative", "positive"}
    assert pred[["probability_negative", "probability_positive"]].sum(axis=1).round(4).eq(1).all()
    folder = tmp_path / "texts"
    folder.mkdir()
    for i, t in enumerate(["truly brilliant", "very dull but the cast is superb"]):
        (folder / f"{i}.txt").write_text(t)
    run_dlrun("predict", f"run_id={run.info.run_id}", f"input={folder}", f"output={tmp_path / 'p.csv'}")
    out = pd.read_csv(tmp_path / "p.csv")
    assert list(out.file) == ["0.txt", "1.txt"] and {"label", "probability_positive"} <= set(out.columns)


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_transformer_saves_and_reloads_with_its_custom_layers(compose, tmp_path, positions):
    import keras

    from dlrun.models import build_model
    from dlrun.tasks.text import TextInfo

    cfg = compose("task=text", "model=transformer", f"model.positions={positions}", "model.blocks=1")
    info = TextInfo(name="t", input_shape=(6,), target="binary", num_classes=2, vocab_size=30)
    model = build_model(cfg.model, info, task="text")
    ids = np.array([[3, 4, 5, 0, 0, 0], [7, 8, 9, 10, 11, 2]])
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    assert np.allclose(model.predict(ids, verbose=0), again.predict(ids, verbose=0), atol=1e-5)


def test_auto_picks_the_ngram_model_for_few_long_texts_and_a_sequence_model_for_many_short(compose):
    """Google's rule: samples / median words per sample below 1,500 -> n-grams."""
    from dlrun.config import validate
    from dlrun.tasks.text import choose_model, sequence_length

    cfg = validate(compose("task=text"))
    long_texts = np.array([" ".join(["word"] * 300)] * 200)  # 200 / 300 = 0.7
    chosen, notes = choose_model(cfg, long_texts)
    assert chosen.name == "bow" and notes["dlrun.model_choice"] == "bow"
    assert "200 training texts / 300 median words = 0.7, below 1500" in notes["dlrun.model_reason"]
    short = np.array(["a short one"] * 6000)  # 6000 / 3 = 2000
    chosen, notes = choose_model(cfg, short)
    assert chosen.name == "cnn1d" and "at least 1500: a sequence model" in notes["dlrun.model_reason"]
    # the sequence length follows the training texts (90th percentile of their words, capped)
    varied = np.array([" ".join(["w"] * n) for n in range(10, 110)])
    length, note = sequence_length(cfg, varied, chosen)
    assert length == int(np.ceil(np.percentile(np.arange(10, 110), 90)))
    assert "9% of the training texts are cut" in note["dlrun.sequence_length"]
    length, note = sequence_length(cfg, np.array([" ".join(["w"] * 2000)] * 5), chosen)
    assert length == 500 and "is 2000, capped by task.max_sequence_length" in note["dlrun.sequence_length"]
    explicit = validate(compose("task=text", "model=cnn1d", "task.sequence_length=40"))
    assert choose_model(explicit, long_texts) == (explicit.model, {})
    assert sequence_length(explicit, varied, explicit.model) == (40, {})


def test_the_auto_choice_is_printed_and_logged_and_the_served_model_reads_raw_text(shared_run):
    run = shared_run("text").run
    assert run.data.tags["dlrun.model_choice"] in ("bow", "cnn1d")
    assert "median words" in run.data.tags["dlrun.model_reason"]
    assert "note: model_choice:" in shared_run("text").proc.stdout


def test_nb_weighting_scales_the_telling_entries_up():
    from dlrun.tasks.text import nb_scale

    bags = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1], [0, 1, 1]], float)  # entry 1 is in every text
    scale = nb_scale(bags, np.array([1, 1, 0, 0]))
    assert scale[1] < 1e-9 and scale[0] > 0.5 and scale[2] > 0.5
