"""Word embeddings: skip-gram with negative sampling (word2vec) as taught.

Words are counted on the corpus (lower case, letters only); the `vocab_size - 1` most frequent
get ids 1.. in order of frequency (id 0: any other word). Frequent words are subsampled
(Mikolov's keep probability sqrt(t/f) + t/f with t = task.subsample); every kept word pairs with
each word within `task.window` (2) of it; each positive pair gets `task.negatives` negative
contexts from TensorFlow's `tf.random.log_uniform_candidate_sampler` (a Zipf distribution over
the frequency-sorted ids). The network scores target . context for the true context and the
negatives (softmax cross-entropy over the 1 + negatives candidates, as in the TF tutorial).

Report: analogy accuracy (b - a + c nearest to d, a, b, c excluded) and neighbour accuracy
(the share of a planted word's 5 nearest words that are of its own kind: countries, capitals,
male or female words) on the generator's probes, each beside chance;
a nearest-neighbour table for probe words; `vectors.tsv` + `metadata.tsv` (TensorBoard
projector format); a 2-D PCA scatter of the most frequent words. The served model takes a
column `word` of raw strings and answers the word's vector.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from dlrun.contract import Data, DataInfo, DatasetRecord, Examples, Objective, Report, Served
from dlrun.errors import DlrunError
from dlrun.registry import DATA, TASKS
from dlrun.tasks.base import Task

UNKNOWN = "[UNK]"


@dataclass
class VocabInfo(DataInfo):
    vocabulary: list[str] = field(default_factory=list)  # id i is vocabulary[i]; 0 is UNKNOWN
    embedding_dim: int = 0


def tokens(sentence: str) -> list[str]:
    return re.findall(r"[a-z']+", sentence.lower())


def keep_probability(counts: np.ndarray, t: float) -> np.ndarray:
    """Mikolov's subsampling of frequent words: keep a word of frequency f with sqrt(t/f) + t/f.
    Hand-written: Keras 3 dropped keras.preprocessing.sequence.make_sampling_table (whose table
    guesses frequencies from Zipf ranks; here they are counted)."""
    if not t:
        return np.ones(len(counts))
    f = counts / max(counts.sum(), 1)
    with np.errstate(divide="ignore"):
        p = np.sqrt(t / f) + t / f
    return np.minimum(1.0, np.nan_to_num(p, posinf=1.0))


def skipgrams(sequence, window: int, keep=None, rng=None) -> list[tuple[int, int]]:
    """Positive (target, context) pairs of one id sequence: each kept target (`keep[id]`, drawn
    with `rng`) with every non-zero id within `window` positions. Hand-written after Keras 2's
    keras.preprocessing.sequence.skipgrams (negative_samples=0, no shuffle), which Keras 3 dropped."""
    pairs = []
    for i, w in enumerate(sequence):
        if not w or (keep is not None and keep[w] < rng.random()):
            continue
        for j in range(max(0, i - window), min(len(sequence), i + window + 1)):
            if j != i and sequence[j]:
                pairs.append((int(w), int(sequence[j])))
    return pairs


@TASKS.register("word2vec", "Skip-gram word embeddings with negative sampling: analogies, neighbours, projector")
class Word2VecTask(Task):
    name = "word2vec"

    def data(self, cfg, batch_size: int) -> Data:
        import pandas as pd
        import tensorflow as tf

        t = cfg.task
        src = DATA.build(cfg.data, self.name)
        sentences = list(src.sentences) if hasattr(src, "sentences") else src.text.split("\n")
        if cfg.trainer.fast:
            sentences = sentences[: int(t.fast_sentences)]
        seqs_words = [tokens(s) for s in sentences]
        counts = Counter(w for s in seqs_words for w in s)
        if len(counts) < 5:
            raise DlrunError(f"'{src.name}' has {len(counts)} distinct words", "word2vec needs a larger text")
        vocabulary = [UNKNOWN] + [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][
            : int(t.vocab_size) - 1]
        index = {w: i for i, w in enumerate(vocabulary)}
        seqs = [[index.get(w, 0) for w in s] for s in seqs_words]
        freq = np.array([0] + [counts[w] for w in vocabulary[1:]], dtype="float64")
        rng = np.random.default_rng(int(cfg.trainer.seed))
        keep = keep_probability(freq, float(t.subsample))
        pairs = np.array([p for s in seqs for p in skipgrams(s, int(t.window), keep, rng)], dtype="int64")
        if len(pairs) < 10:
            raise DlrunError(f"only {len(pairs)} skip-gram pairs", "use more text or a smaller task.subsample")
        pairs = pairs[rng.permutation(len(pairs))]
        num_ns = int(t.negatives)
        negatives, _, _ = tf.random.log_uniform_candidate_sampler(
            true_classes=tf.constant(pairs[:, 1:2]), num_true=1, num_sampled=num_ns * len(pairs), unique=False,
            range_max=len(vocabulary), seed=int(cfg.trainer.seed))
        negatives = negatives.numpy().reshape(len(pairs), num_ns)
        contexts = np.concatenate([pairs[:, 1:2], negatives], axis=1)
        labels = np.zeros(contexts.shape, dtype="float32")
        labels[:, 0] = 1.0
        n_val = int(len(pairs) * float(t.val_size))

        def split(a, b, shuffle=False):
            ds = tf.data.Dataset.from_tensor_slices(((pairs[a:b, 0], contexts[a:b]), labels[a:b]))
            if shuffle:
                ds = ds.shuffle(min(b - a, 100_000), seed=int(cfg.trainer.seed))
            return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

        info = VocabInfo(name=src.name, input_shape=(1 + num_ns,), target="skipgram", num_classes=len(vocabulary),
                         source=src.source, sizes={"train": len(pairs) - n_val, "val": n_val}, vocabulary=vocabulary)
        rows = pd.DataFrame({"sentence": sentences})
        words = pd.DataFrame({"word": vocabulary[1:6]})
        return Data(info, split(n_val, len(pairs), True), split(0, n_val) if n_val else None,
                    arrays={"freq": freq}, examples={"test": Examples(words, None, words, src.name, src.source)},
                    records=[DatasetRecord(src.name, src.source, "training", rows)],
                    preprocess={"analogies": getattr(src, "analogies", []), "groups": getattr(src, "groups", [])})

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        return Objective("loss", maximize=False)

    def build_model(self, cfg, info: DataInfo):
        import keras

        from dlrun.models import build_model
        from dlrun.training.compile import compile_model

        model = build_model(cfg.model, info, task=self.name)
        return compile_model(model, cfg, info, loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                             metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])

    def serving(self, cfg, model, data: Data) -> Served:
        """A column `word` of raw strings -> the word's vector (`vector_0`, ...; unknown words: id 0's)."""
        import keras

        inp = keras.Input(shape=(), dtype="string", name="word")
        ids = keras.layers.StringLookup(vocabulary=data.info.vocabulary[1:], num_oov_indices=1, name="lookup")(inp)
        vec = model.get_layer("w2v_embedding")(ids)
        served = keras.Model({"word": inp}, {"vector": vec}, name="served_word2vec")
        return Served(served, example=data.examples["test"].inputs)

    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        vocabulary = data.info.vocabulary
        vectors = np.asarray(served.model.get_layer("w2v_embedding").embeddings, dtype="float64")
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        index = {w: i for i, w in enumerate(vocabulary)}
        probes = data.preprocess or {}
        k = int(cfg.task.neighbours)
        V = len(vocabulary) - 1  # id 0 (unknown) is never an answer
        report = Report(primary="test/analogy_accuracy")
        analogies = [a for a in probes.get("analogies", []) if all(w in index for w in a)]
        if analogies:
            hits = 0
            for a, b, c, d in analogies:
                q = unit[index[b]] - unit[index[a]] + unit[index[c]]
                sims = unit @ q
                sims[[0, index[a], index[b], index[c]]] = -np.inf
                hits += int(np.argmax(sims) == index[d])
            report.metrics.update({"test/analogy_accuracy": hits / len(analogies), "test/analogy_chance": 1 / (V - 3),
                                   "test/analogies": float(len(analogies))})
        groups = [[w for w in g if w in index] for g in probes.get("groups", [])]
        groups = [g for g in groups if len(g) > 1]
        if groups:  # the k nearest words of a planted word: how many are of its own kind
            same = [len(set(nearest(unit, index[w], k)) & {index[u] for u in g}) / k for g in groups for w in g]
            chance = [(len(g) - 1) / (V - 1) for g in groups for _ in g]
            report.metrics.update({"test/neighbour_accuracy": float(np.mean(same)),
                                   "test/neighbour_chance": float(np.mean(chance))})
        probe_words = [g[0] for g in groups] + [g[1] for g in groups] or vocabulary[1:7]
        report.tables["neighbours"] = [
            {"word": w, **{f"n{r + 1}": f"{vocabulary[j]} {unit[index[w]] @ unit[j]:.2f}"
                           for r, j in enumerate(nearest(unit, index[w], k))}} for w in probe_words]
        report.texts["vectors.tsv"] = "\n".join("\t".join(f"{v:.5f}" for v in row) for row in vectors[1:]) + "\n"
        report.texts["metadata.tsv"] = "\n".join(vocabulary[1:]) + "\n"
        if cfg.tracking.log_plots:
            report.figures["pca.png"] = pca_plot(vectors, vocabulary, int(cfg.task.plot_words))
            if cfg.task.tsne:
                report.figures["tsne.png"] = pca_plot(vectors, vocabulary, int(cfg.task.plot_words), tsne=True)
        return report


def nearest(unit: np.ndarray, i: int, k: int) -> list[int]:
    """The k ids nearest to id i by cosine (itself and the unknown id 0 excluded)."""
    sims = unit @ unit[i]
    sims[[0, i]] = -np.inf
    return list(np.argsort(-sims, kind="stable")[:k])


def pca_plot(vectors, vocabulary, n: int, tsne: bool = False):
    """The n most frequent words' vectors projected on their first two principal components
    (or, tsne=True, laid out by scikit-learn's t-SNE, which keeps neighbours together)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    n = min(n, len(vocabulary) - 1)
    if tsne:
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=0).fit_transform(
            vectors[1: n + 1])
    else:
        xy = PCA(n_components=2, random_state=0).fit_transform(vectors[1: n + 1])
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.scatter(xy[:, 0], xy[:, 1], s=8)
    for (x, y), w in zip(xy, vocabulary[1: n + 1], strict=True):
        ax.annotate(w, (x, y), fontsize=8)
    how = "t-SNE" if tsne else "first two principal components"
    ax.set_title(f"word vectors, {how} ({n} most frequent words)")
    return fig
