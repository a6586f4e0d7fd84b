"""Custom Keras layers of the translation transformer: the decoder block (masked self-attention,
cross-attention, feed-forward) and the greedy decoder of the served model. Hand-written because
Keras has neither (KerasNLP has a decoder block, but is not a dependency). The token + position
embedding and the encoder block are the text task's (dlrun/models/_text_layers.py); importing
this module registers them too, so a served model that names this module loads.
"""

import keras

from dlrun.models._text_layers import EncoderBlock, PositionalEmbedding  # noqa: F401 (registered for loading)


@keras.saving.register_keras_serializable(package="dlrun_seq2seq")
class DecoderBlock(keras.layers.Layer):
    """[target states (B, T, d), encoder states (B, S, d), source padding mask (B, S)] -> (B, T, d).

    Causal (masked) multi-head self-attention: position i attends to positions <= i only, so
    teacher forcing trains all positions at once without seeing the answer; then multi-head
    cross-attention to the encoder states (padding keys masked); then a feed-forward layer.
    Each with a residual and layer norm (post-norm, as the encoder block).
    """

    def __init__(self, heads, key_dim, ff_dim, dropout=0.1, **kw):
        super().__init__(**kw)
        self.heads, self.key_dim, self.ff_dim, self.dropout = heads, key_dim, ff_dim, dropout
        self.self_attention = keras.layers.MultiHeadAttention(heads, key_dim, dropout=dropout)
        self.cross_attention = keras.layers.MultiHeadAttention(heads, key_dim, dropout=dropout)
        self.ff1 = keras.layers.Dense(ff_dim, activation="relu")
        self.ff2 = None
        self.norms = [keras.layers.LayerNormalization() for _ in range(3)]
        self.drop = keras.layers.Dropout(dropout)

    def build(self, shapes):
        self.ff2 = keras.layers.Dense(shapes[0][-1])
        super().build(shapes)

    def call(self, inputs, training=None):
        x, context, source_mask = inputs
        a = self.self_attention(x, x, use_causal_mask=True, training=training)
        x = self.norms[0](x + self.drop(a, training=training))
        m = keras.ops.cast(source_mask, "bool")  # (batch, query, key): no query attends to source padding
        cross_mask = keras.ops.logical_and(m[:, None, :], keras.ops.ones_like(x[..., 0], "bool")[:, :, None])
        c = self.cross_attention(x, context, attention_mask=cross_mask, training=training)
        x = self.norms[1](x + self.drop(c, training=training))
        f = self.ff2(self.ff1(x))
        return self.norms[2](x + self.drop(f, training=training))

    def compute_mask(self, inputs, previous_mask=None):
        """The target padding mask goes on (the last Dense and the loss see it)."""
        return previous_mask[0] if isinstance(previous_mask, list | tuple) else previous_mask

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "key_dim": self.key_dim, "ff_dim": self.ff_dim,
                "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="dlrun_seq2seq")
class GreedyDecode(keras.layers.Layer):
    """Source token ids (B, S) -> translations (B,) as strings, by greedy decoding.

    Encodes once, then feeds the decoder its own most likely token step by step (starting from
    the start id) until every sequence has produced the end id or `length` tokens; the target
    vocabulary turns ids into tokens, joined with `separator` ("" for characters, " " for words).
    A tf.while_loop over a fixed-size buffer, so the whole search is inside the saved model.
    """

    def __init__(self, encoder, decoder, vocabulary, start_id, end_id, length, separator=" ", **kw):
        super().__init__(**kw)
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        if isinstance(decoder, dict):
            decoder = keras.saving.deserialize_keras_object(decoder)
        self.encoder, self.decoder = encoder, decoder
        self.vocabulary = [str(v) for v in vocabulary]
        self.start_id, self.end_id, self.length, self.separator = int(start_id), int(end_id), int(length), separator

    def build(self, shape):
        self.built = True

    def call(self, source):
        import tensorflow as tf

        source = tf.cast(source, "int64")
        context = self.encoder(source, training=False)
        batch, length = tf.shape(source)[0], self.length
        buffer = tf.concat([tf.fill([batch, 1], tf.constant(self.start_id, "int64")),
                            tf.zeros([batch, length], "int64")], axis=1)

        def running(i, buf):
            ended = tf.reduce_any(tf.equal(buf[:, 1:], self.end_id), axis=1)
            return tf.logical_and(i < length, tf.logical_not(tf.reduce_all(ended)))

        def step(i, buf):
            logits = self.decoder([buf[:, :length], context, source], training=False)
            token = tf.argmax(logits[:, i], axis=-1, output_type="int64")
            at = tf.equal(tf.range(length + 1), i + 1)[None]
            return i + 1, tf.where(at, token[:, None], buf)

        _, buffer = tf.while_loop(running, step, (tf.constant(0), buffer))
        ids = buffer[:, 1:]
        before_end = tf.equal(tf.cumsum(tf.cast(tf.equal(ids, self.end_id), "int32"), axis=1), 0)
        keep = before_end & (ids > 0) & (ids < len(self.vocabulary))  # no padding, start or end
        table = tf.constant(self.vocabulary + ["", ""])
        tokens = tf.ragged.boolean_mask(tf.gather(table, ids), keep)
        return tf.strings.reduce_join(tokens, axis=1, separator=self.separator)

    def compute_output_spec(self, source):
        return keras.KerasTensor((source.shape[0],), dtype="string")

    def get_config(self):
        return {**super().get_config(), "encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder": keras.saving.serialize_keras_object(self.decoder), "vocabulary": self.vocabulary,
                "start_id": self.start_id, "end_id": self.end_id, "length": self.length,
                "separator": self.separator}
