"""Skip-gram with negative sampling (task=word2vec): target id and 1 + negatives context ids ->
one logit per context (the dot product of the target's and the context's embeddings).

The target embedding, named `w2v_embedding`, is the word vector the task reports and serves.
"""

from __future__ import annotations

from dlrun.registry import MODELS


@MODELS.register("skipgram", "Target and context Embeddings -> dot products (word2vec, negative sampling)",
                 tags=("word2vec",))
def skipgram(cfg, info):
    import keras

    vocab, dim = int(info.num_classes), int(cfg.embedding_dim)
    target = keras.Input(shape=(), dtype="int64", name="target")
    context = keras.Input(shape=info.input_shape, dtype="int64", name="context")
    t = keras.layers.Embedding(vocab, dim, name="w2v_embedding")(target)  # (batch, dim)
    c = keras.layers.Embedding(vocab, dim, name="context_embedding")(context)  # (batch, 1 + negatives, dim)
    logits = keras.layers.Dot(axes=(2, 1), name="dots")([c, t])  # (batch, 1 + negatives)
    return keras.Model([target, context], logits, name="skipgram")
