"""The translation encoder-decoder transformer (course "Transformers": the translation hands-on).

    source ids (B, S) -> token + sinusoidal position embedding -> N encoder blocks -> context
    target ids shifted right (B, T), start id first -> token + position embedding
        -> N decoder blocks (causal self-attention, cross-attention to the context, feed-forward)
        -> Dense over the target vocabulary (+ start and end ids): logits (B, T, V + 2)

The trainable model takes {"source", "target_in"} (teacher forcing: the true previous tokens)
and holds two sub-models, `encoder` and `decoder`, that the served model's greedy decoder
(dlrun/models/_seq2seq_layers.py GreedyDecode) calls step by step. Sizes come from
`info` (TranslationInfo in dlrun/tasks/translation.py): vocabularies and sequence lengths.
"""

from __future__ import annotations

from dlrun.registry import MODELS


def _layers():
    """The custom layers (their module imports Keras, so only on use)."""
    from dlrun.models import _seq2seq_layers

    return _seq2seq_layers


@MODELS.register("seq2seq_transformer",
                 "Encoder-decoder transformer: sinusoidal positions, causal self-attention, cross-attention",
                 tags=("translation",))
def seq2seq_transformer(cfg, info):
    import keras

    seq2seq = _layers()
    dim, blocks = int(cfg.embedding_dim), int(cfg.blocks)
    heads, key_dim, ff_dim = int(cfg.heads), int(cfg.key_dim), int(cfg.ff_dim)
    dropout, positions = float(cfg.dropout), str(cfg.positions)

    src = keras.Input(shape=(info.source_length,), dtype="int64", name="source")
    x = seq2seq.PositionalEmbedding(info.source_vocab, info.source_length, dim, positions, name="source_embedding")(src)
    for i in range(blocks):
        x = seq2seq.EncoderBlock(heads, key_dim, ff_dim, dropout, name=f"encoder_{i}")(x)
    # the decoder takes the source padding mask explicitly (from the source ids), so the encoder
    # states leave without a Keras mask (a copy op carries none; the decoder model would drop it)
    encoder = keras.Model(src, keras.ops.copy(x), name="encoder")

    tgt = keras.Input(shape=(info.target_length,), dtype="int64", name="target_in")
    context = keras.Input(shape=(info.source_length, dim), name="context")
    src_ids = keras.Input(shape=(info.source_length,), dtype="int64", name="source_ids")
    source_mask = keras.ops.not_equal(src_ids, 0)
    y = seq2seq.PositionalEmbedding(info.output_vocab, info.target_length, dim, positions, name="target_embedding")(tgt)
    for i in range(blocks):
        y = seq2seq.DecoderBlock(heads, key_dim, ff_dim, dropout, name=f"decoder_{i}")([y, context, source_mask])
    logits = keras.layers.Dense(info.output_vocab, name="logits")(y)
    decoder = keras.Model([tgt, context, src_ids], logits, name="decoder")

    source = keras.Input(shape=(info.source_length,), dtype="int64", name="source")
    target_in = keras.Input(shape=(info.target_length,), dtype="int64", name="target_in")
    out = decoder([target_in, encoder(source), source])
    return keras.Model({"source": source, "target_in": target_in}, out, name="seq2seq_transformer")
