"""Char-level generation (task=text_generate): n-gram baselines on hand-checked strings, the
text file loader, windows by position, the sampler, and end-to-end runs whose logged model
continues raw prompts after reloading from MLflow."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from dlrun.data.corpus import pydoc_topics, read_text_file
from dlrun.errors import DlrunError
from dlrun.tasks.text_generate import CharNgram, encode

TINY = ["model.units=[16]", "model.embedding_dim=8", "task.window=20", "task.eval_length=200",
        "task.sample.length=20", "task.generate.length=15", "task.fast_chars=3000"]


def test_add_one_bigram_by_hand():
    lm = CharNgram("abab", 2, "add_one", ["a", "b"])  # V = a, b, unknown = 3
    assert lm.prob("a", "b") == pytest.approx((2 + 1) / (2 + 3))  # c(ab) = 2, c(a.) = 2
    assert lm.prob("b", "b") == pytest.approx((0 + 1) / (1 + 3))  # c(bb) = 0, c(b.) = 1
    assert lm.prob("a", "z") == pytest.approx(1 / 5)  # an unseen character is the unknown symbol
    assert lm.bits_per_char("ab") == pytest.approx(-math.log2(0.6))


def test_kneser_ney_bigram_by_hand_and_sums_to_one():
    lm = CharNgram("abab", 2, "kneser_ney", ["a", "b"])
    # bigrams ab:2, ba:1 -> D2 = n1 / (n1 + 2 n2) = 1/3; continuation counts a:1, b:1 -> D1 = 1,
    # clamped to 0.9: P1(b) = 0.1/2 + 0.9 * 2/2 * 1/3 = 0.35; P2(b|a) = (2 - 1/3)/2 + (1/3)(1/2)(0.35)
    assert lm.prob("", "b") == pytest.approx(0.35)
    assert lm.prob("a", "b") == pytest.approx(5 / 6 + 0.35 / 6)
    text = "the cat sat on the mat; the hat is flat"
    for order in (1, 3, 4):
        lm = CharNgram(text, order, "kneser_ney")
        for context in ("th", "q", "at", ""):
            total = sum(lm.prob(context, c) for c in sorted(set(text))) + lm.prob(context, "\x00")
            assert total == pytest.approx(1.0)
    assert CharNgram(text, 3, "kneser_ney").bits_per_char("the cat") < CharNgram(text, 3, "add_one").bits_per_char(
        "the cat")


def test_encode_matches_the_sorted_vocabulary_and_marks_unknown_characters():
    assert encode("abzé\nb", ["\n", "a", "b", "é"]).tolist() == [2, 3, 0, 4, 1, 3]


def test_text_file_reader(tmp_path):
    good = tmp_path / "book.txt"
    good.write_text("Call me Ishmael.\r\nSome years ago.\n", encoding="utf-8")
    assert read_text_file(good) == "Call me Ishmael.\nSome years ago.\n"
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("  \n")
    for name, message in (("latin.txt", "not UTF-8 .byte 0xe9 at offset 3"), ("empty.txt", "is empty"),
                          ("nothing.txt", "does not exist"), ("", "is a folder")):
        with pytest.raises(DlrunError, match=message):
            read_text_file(tmp_path / name)
    text = pydoc_topics({}).text
    assert len(text) > 100_000 and "assert" in text and text == pydoc_topics({}).text


def test_windows_are_split_by_position(compose):
    from dlrun.config import validate
    from dlrun.registry import TASKS

    cfg = validate(compose("experiment=char_lstm", "trainer.fast=true", "task.fast_chars=2000", "task.window=10"))
    d = TASKS.get("text_generate")().data(cfg, 4)
    a = d.arrays
    assert a["text_train"] + a["text_val"] + a["text_test"] == pydoc_topics({}).text[:2000]
    assert len(a["text_train"]) == 1800 and d.info.vocabulary == sorted(set(a["text_train"]))
    x, y = next(iter(d.val))
    assert x.shape == (4, 10) and np.array_equal(x[:, 1:], y[:, :-1])  # the next character at each position
    assert np.array_equal(x[0], a["ids_val"][:10]) and np.array_equal(x[1], a["ids_val"][10:20])


def test_text_file_source(tmp_path):
    from omegaconf import OmegaConf

    from dlrun.data.corpus import text_file

    book = tmp_path / "book.txt"
    book.write_text("It was the best of times.\n" * 10)
    corpus = text_file(OmegaConf.create({"path": str(book), "max_chars": 30}))
    assert corpus.text == ("It was the best of times.\n" * 2)[:30] and corpus.name == "book"
    with pytest.raises(DlrunError, match="needs data.path"):
        text_file(OmegaConf.create({"path": None}))


def test_preset_smoke_then_predict_from_a_prompt(run_dlrun, runs, mlflow_client, workdir):
    """The preset at tiny size; its logged model continues raw prompts (dlrun predict, MLflow pyfunc)."""
    proc = run_dlrun("train", "experiment=char_lstm", "trainer=smoke", *TINY)
    assert "5-gram" in proc.stdout
    run = runs()[0]
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert m["baseline/ngram5_kn/bits_per_char"] < m["baseline/ngram3_add_one/bits_per_char"]
    assert math.isclose(m["test/perplexity"], 2 ** m["test/bits_per_char"], rel_tol=1e-6)
    run_id = run.info.run_id
    # the logged model, reloaded by dlrun eval, scores the test text exactly as the trained one did
    run_dlrun("eval", f"run_id={run_id}")
    history = [h.value for h in mlflow_client.get_metric_history(run_id, "test/bits_per_char")]
    assert len(history) == 2 and history[0] == pytest.approx(history[1], rel=1e-6)
    proc = run_dlrun("predict", f"run_id={run_id}", "prompt=The assert", "length=25", "temperature=0", "output=out.csv")
    assert "Traceback" not in proc.stderr and "UserWarning" not in proc.stderr
    out = pd.read_csv(workdir / "out.csv", keep_default_na=False)
    assert len(out) == 1 and len(out.generated[0]) == 25 and out.text[0] == "The assert" + out.generated[0]

    import mlflow

    from dlrun.tasks.text_generate import TextGenerateTask

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    answers = model.predict(pd.DataFrame({"prompt": ["The assert", "", "\u00fcber"]}))
    assert list(answers.columns) == ["generated", "text"]
    assert [len(g) for g in answers.generated] == [15, 15, 15]  # task.generate.length
    assert answers.text[2].startswith("\u00fcber")  # characters the model never saw are read as unknown
    served, task = model.unwrap_python_model().served, TextGenerateTask()
    cfg = OmegaConf.create({"predict": {"prompt": "The", "temperature": "-1"}})
    with pytest.raises(DlrunError, match="temperature must be a number >= 0"):
        task.predict(cfg, served, task.read(cfg, "", served))
    cfg.predict = {"prompt": "The", "temperature": 0, "length": 12}
    greedy = task.predict(cfg, served, task.read(cfg, "", served))
    assert len(greedy.generated[0]) == 12 and greedy.equals(task.predict(cfg, served, task.read(cfg, "", served)))
