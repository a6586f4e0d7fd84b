"""Word embeddings (task=word2vec): skip-gram pairs by hand, subsampling, the planted corpus, and
a smoke run of the preset that logs projector TSVs and probe accuracies beside chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrun.data.corpus import planted_sentences
from dlrun.tasks.word2vec import keep_probability, skipgrams, tokens


def test_skipgram_pairs_of_a_short_sentence_by_hand():
    # "the cat sat on mats" with ids 1..5, window 2
    pairs = skipgrams([1, 2, 3, 4, 5], window=2)
    expected = [(1, 2), (1, 3), (2, 1), (2, 3), (2, 4), (3, 1), (3, 2), (3, 4), (3, 5), (4, 2), (4, 3), (4, 5),
                (5, 3), (5, 4)]
    assert pairs == expected
    assert skipgrams([1, 0, 3], window=1) == []  # id 0 (unknown word) is neither target nor context
    keep = np.array([0.0, 1.0, 0.0, 1.0])  # word 2 is always dropped as a target
    assert skipgrams([1, 2, 3], 1, keep, np.random.default_rng(0)) == [(1, 2), (3, 2)]


def test_subsampling_keeps_rare_words_and_drops_frequent_ones():
    p = keep_probability(np.array([0.0, 9000, 900, 90, 10]), 1e-3)
    assert p[-1] == 1.0 and p[1] < p[2] < 1.0
    assert np.all(keep_probability(np.array([5.0, 1.0]), 0) == 1)


def test_planted_corpus_is_deterministic_and_has_probes():
    a, b = planted_sentences(200, 1), planted_sentences(200, 1)
    assert a.sentences == b.sentences and a.sentences != planted_sentences(200, 2).sentences
    words = {w for s in a.sentences for w in tokens(s)}
    assert ("france", "paris", "germany", "berlin") in a.analogies
    assert ("king", "queen", "man", "woman") in a.analogies
    assert {"paris", "queen", "he", "she"} <= words and a.groups[0][:2] == ["france", "germany"]


def test_preset_smoke_logs_projector_files_and_probe_accuracy(run_dlrun, runs, mlflow_client):
    run_dlrun("train", "experiment=word2vec", "trainer=smoke", "trainer.limit_batches=null", "data.n=2000",
              "task.fast_sentences=2000", "task.tsne=true")
    run = runs()[0]
    m = run.data.metrics
    assert run.info.status == "FINISHED" and 0 < m["test/analogy_chance"] < 0.05
    assert 0 < m["test/neighbour_chance"] < 0.2
    # one epoch on 2,000 sentences already places the planted pairs well above chance
    assert m["test/analogy_accuracy"] > 3 * m["test/analogy_chance"]
    assert m["test/neighbour_accuracy"] > 2 * m["test/neighbour_chance"]
    files = {f.path for f in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"vectors.tsv", "metadata.tsv"} <= files
    meta = mlflow_client.download_artifacts(run.info.run_id, "metadata.tsv")
    vec = mlflow_client.download_artifacts(run.info.run_id, "vectors.tsv")
    words = Path(meta).read_text().split("\n")[:-1]
    rows = [r.split("\t") for r in Path(vec).read_text().split("\n")[:-1]]
    assert len(words) == len(rows) and len(rows[0]) == 32 and "paris" in words
    plots = {f.path for f in mlflow_client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/pca.png", "plots/tsne.png"} <= plots
