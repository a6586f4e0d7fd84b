"""Character-level language models (task=text_generate): char ids -> next-char logits at every
position.

    chars (batch, time) -> Embedding -> LSTM/GRU stack (return_sequences) -> Dropout -> Dense(vocab)

The logits layer is named `logits` and the recurrent layers `rnn_<i>`: the sampler
(dlrun/models/_char_layers.py CharGenerator) steps through the same layers' cells one
character at a time, so training and generation share one set of weights.
"""

from __future__ import annotations

from dlrun.registry import MODELS

TAGS = ("text_generate",)


def _units(cfg) -> list[int]:
    units = cfg.units
    if isinstance(units, int):
        return [units] * int(cfg.layers)
    return [int(u) for u in units]


def char_rnn(cfg, info, cell: str):
    import keras

    layer_cls = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell]
    vocab = int(info.num_classes)
    inp = keras.Input(shape=(None,), dtype="int32", name="chars")
    x = keras.layers.Embedding(vocab, int(cfg.embedding_dim), name="embedding")(inp)
    for i, u in enumerate(_units(cfg)):
        x = layer_cls(int(u), return_sequences=True, dropout=float(cfg.input_dropout), name=f"rnn_{i}")(x)
    if cfg.get("dropout"):
        x = keras.layers.Dropout(float(cfg.dropout), name="dropout")(x)
    out = keras.layers.Dense(vocab, name="logits", dtype="float32")(x)
    return keras.Model(inp, out, name=f"char_{cell}")


@MODELS.register("char_lstm", "Char Embedding -> stacked LSTM -> next-character logits (text_generate)", tags=TAGS)
def char_lstm(cfg, info):
    return char_rnn(cfg, info, "lstm")


@MODELS.register("char_gru", "Char Embedding -> stacked GRU -> next-character logits (text_generate)", tags=TAGS)
def char_gru(cfg, info):
    return char_rnn(cfg, info, "gru")
