"""Custom Keras layers of the text models: token + position embedding and a transformer encoder
block. Hand-written because Keras has neither layer (KerasNLP has, but is not a dependency).
Its own module (imports Keras at the top) so that the served model's loader can import it
before loading; dlrun.models skips modules starting with "_" at CLI start.
"""

import keras
import numpy as np


def sinusoidal(length: int, dim: int):
    """The fixed positional encoding of "Attention is all you need" as a (length, dim) array."""
    pos = np.arange(length)[:, None]
    i = np.arange(dim)[None, :]
    angle = pos / np.power(10000.0, (2 * (i // 2)) / dim)
    return np.where(i % 2 == 0, np.sin(angle), np.cos(angle)).astype("float32")


@keras.saving.register_keras_serializable(package="dlrun_text")
class PositionalEmbedding(keras.layers.Layer):
    """Token embedding plus sinusoidal (fixed) or learned position embedding; masks padding (id 0)."""

    def __init__(self, vocab_size, sequence_length, dim, positions="sinusoidal", **kw):
        super().__init__(**kw)
        self.vocab_size, self.sequence_length, self.dim, self.positions = vocab_size, sequence_length, dim, positions
        self.tokens = keras.layers.Embedding(vocab_size, dim)
        if positions == "learned":
            self.pos = keras.layers.Embedding(sequence_length, dim)
        else:
            self.table = sinusoidal(sequence_length, dim)

    def build(self, shape):
        self.tokens.build(shape)
        if self.positions == "learned":
            self.pos.build((shape[1],))
        super().build(shape)

    def call(self, ids):
        x = self.tokens(ids) * (self.dim ** 0.5)
        if self.positions == "learned":
            return x + self.pos(keras.ops.arange(keras.ops.shape(ids)[1]))[None]
        return x + keras.ops.convert_to_tensor(self.table)[None, : keras.ops.shape(ids)[1]]

    def compute_mask(self, ids, mask=None):
        return keras.ops.not_equal(ids, 0)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "sequence_length": self.sequence_length,
                "dim": self.dim, "positions": self.positions}

@keras.saving.register_keras_serializable(package="dlrun_text")
class EncoderBlock(keras.layers.Layer):
    """Multi-head self-attention + feed-forward, each with a residual and layer norm (post-norm);
    padding positions are masked out of the attention keys."""

    supports_masking = True

    def __init__(self, heads, key_dim, ff_dim, dropout=0.1, **kw):
        super().__init__(**kw)
        self.heads, self.key_dim, self.ff_dim, self.dropout = heads, key_dim, ff_dim, dropout
        self.attention = keras.layers.MultiHeadAttention(heads, key_dim, dropout=dropout)
        self.ff1 = keras.layers.Dense(ff_dim, activation="relu")
        self.ff2 = None
        self.norm1 = keras.layers.LayerNormalization()
        self.norm2 = keras.layers.LayerNormalization()
        self.drop = keras.layers.Dropout(dropout)

    def build(self, shape):
        self.ff2 = keras.layers.Dense(shape[-1])
        super().build(shape)

    def call(self, x, mask=None, training=None):
        attention_mask = None
        if mask is not None:  # (batch, query, key): no query attends to a padding key
            m = keras.ops.cast(mask, "bool")
            attention_mask = keras.ops.logical_and(m[:, None, :], keras.ops.ones_like(m, "bool")[:, :, None])
        a = self.attention(x, x, attention_mask=attention_mask, training=training)
        x = self.norm1(x + self.drop(a, training=training))
        f = self.ff2(self.ff1(x))
        return self.norm2(x + self.drop(f, training=training))

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "key_dim": self.key_dim, "ff_dim": self.ff_dim,
                "dropout": self.dropout}

