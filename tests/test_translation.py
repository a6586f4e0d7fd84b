"""Translation task: the dates corpus, the parallel-text loader and its errors, the causal mask of
the decoder, vectorizers adapted on training pairs only, and an end-to-end run whose logged
model translates raw strings after reloading from MLflow."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.data.parallel import dates_frame, ordinal_suffix, ordinal_words, read_parallel
from dlrun.errors import DlrunError
from dlrun.registry import TASKS

TINY = ("model.embedding_dim=16", "model.blocks=1", "model.heads=2", "model.key_dim=8", "model.ff_dim=32")


def test_dates_corpus_is_deterministic_and_its_targets_are_iso_dates():
    import datetime as dt

    a, b, c = dates_frame(400, 1), dates_frame(400, 1), dates_frame(400, 2)
    assert a.equals(b) and not a.equals(c)
    for t in a.target:
        dt.date.fromisoformat(t)  # a real date, YYYY-MM-DD
    src = " ".join(a.source)
    assert "the " in src and " of " in src and "," in src  # several styles
    assert [ordinal_words(d) for d in (1, 12, 20, 21, 30, 31)] == [
        "first", "twelfth", "twentieth", "twenty first", "thirtieth", "thirty first"]
    assert [ordinal_suffix(d) for d in (1, 2, 3, 11, 12, 13, 22, 31)] == [
        "1st", "2nd", "3rd", "11th", "12th", "13th", "22nd", "31st"]
    short = dates_frame(50, 3, ["short"])
    assert all(len(s.split()[-1]) == 2 for s in short.source)
    assert all(t[2:4] == s.split()[-1] for s, t in zip(short.source, short.target, strict=True))


def test_parallel_loader_and_its_errors(tmp_path):
    f = tmp_path / "fra.txt"
    f.write_text('Go.\tVa !\tCC-BY 2.0 (France)\n\nHe said "hi".\tIl a dit "salut".\n')
    frame = read_parallel(f)
    assert list(frame.source) == ["Go.", 'He said "hi".'] and list(frame.target) == ["Va !", 'Il a dit "salut".']
    with pytest.raises(DlrunError, match="does not exist"):
        read_parallel(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("a\tb\nno tab here\n")
    with pytest.raises(DlrunError, match=r"bad\.txt:2: no tab"):
        read_parallel(bad)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DlrunError, match="no lines"):
        read_parallel(tmp_path / "empty.txt")


def test_causal_mask_blocks_attention_to_future_positions():
    import keras

    from dlrun.models._seq2seq_layers import DecoderBlock

    block = DecoderBlock(2, 4, 8, dropout=0.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 5, 8)).astype("float32")
    context = rng.normal(size=(1, 3, 8)).astype("float32")
    source_mask = np.array([[True, True, False]])

    def run(x, ctx=context):
        return np.asarray(block([keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(ctx), source_mask]))

    y = run(x)
    later = x.copy()
    later[:, 3:] = rng.normal(size=(1, 2, 8))  # change the future of position 2
    assert np.allclose(y[:, :3], run(later)[:, :3], atol=1e-5)
    assert not np.allclose(y[:, 3:], run(later)[:, 3:], atol=1e-3)
    earlier = x.copy()
    earlier[:, 0] = rng.normal(size=(1, 8))  # the past reaches every later position
    assert not np.allclose(y[:, 1:], run(earlier)[:, 1:], atol=1e-3)
    padded = context.copy()
    padded[:, 2] = rng.normal(size=(1, 8))  # a source padding position is never attended
    assert np.allclose(y, run(x, padded), atol=1e-5)


def test_vectorizers_are_adapted_on_training_pairs_only(compose, tmp_path):
    from dlrun.config import validate

    pairs = [(f"word{i} cat", f"mot{i} chat") for i in range(40)]
    train = tmp_path / "train.txt"
    train.write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
    test = tmp_path / "test.txt"
    test.write_text("zebra cat\tzèbre chat\nword1 zebra\tmot1 zèbre\n")
    cfg = validate(compose("task=translation", "data=parallel_text", f"data.path={train}", f"data.test_path={test}"))
    d = TASKS.get("translation")().data(cfg, 8)
    assert d.info.sizes["test"] == 2
    assert "chat" in d.info.target_tokens and "zèbre" not in d.info.target_tokens
    vocab = d.preprocess.get_layer("vectorize_source").get_vocabulary()
    assert "zebra" not in vocab
    x, y, w = next(iter(d.train))
    start, end = d.info.target_vocab, d.info.target_vocab + 1
    x_in, y_out, w = np.asarray(x["target_in"]), np.asarray(y), np.asarray(w)
    assert (x_in[:, 0] == start).all() and (x_in[:, 1:3] == y_out[:, :2]).all()  # teacher forcing: shifted by one
    assert (y_out[:, 2] == end).all() and (w.sum(axis=1) == 3).all()  # two words + end; padding weighs 0


def test_train_then_translate_raw_strings_from_the_logged_model(run_dlrun, runs, mlflow_client, workdir, tmp_path):
    run_dlrun("train", "experiment=translation", "trainer=smoke", "data.n=400", *TINY)
    run = runs()[0]
    m = run.data.metrics
    assert {"test/exact_match", "test/token_accuracy", "test/bleu", "baseline/copy/bleu",
            "baseline/most_frequent/exact_match"} <= set(m)
    # the logged model, reloaded by dlrun eval, decodes the test sentences exactly as the trained one
    run_dlrun("eval", f"run_id={run.info.run_id}")
    for key in ("test/exact_match", "test/token_accuracy", "test/bleu"):
        history = [h.value for h in mlflow_client.get_metric_history(run.info.run_id, key)]
        assert len(history) == 2 and history[0] == pytest.approx(history[1], abs=1e-9), key
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    pred = model.predict(pd.DataFrame({"text": ["the third of march 1987", "3 mar 87", "zzz unseen"]}))
    assert list(pred.columns) == ["translation"] and len(pred) == 3
    assert all(isinstance(t, str) and len(t) <= 11 for t in pred.translation)  # 10 characters + the end position
    src = tmp_path / "dates.tsv"
    src.write_text("march 3, 1987\t1987-03-03\n12 jan 05\t2005-01-12\n")
    run_dlrun("predict", f"run_id={run.info.run_id}", f"input={src}", f"output={tmp_path / 'p.csv'}")
    out = pd.read_csv(tmp_path / "p.csv", dtype=str, keep_default_na=False)
    assert list(out.columns) == ["source", "reference", "translation"] and len(out) == 2
    assert list(out.translation) == list(model.predict(pd.DataFrame({"text": list(out.source)})).translation)
    # the translator exports as a SavedModel whose string answers match the Keras model's
    exported = run_dlrun("export", f"run_id={run.info.run_id}", "format=savedmodel")
    assert (workdir / "export" / "savedmodel" / "saved_model" / "saved_model.pb").is_file()
    assert "max abs diff vs the Keras model 0)" in " ".join(exported.stdout.split()), exported.stdout
