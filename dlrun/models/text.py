"""Text classifiers on the token ids (or bag-of-words vector) of a TextVectorization layer.

The vectorizer itself is the task's fitted preprocessing (tasks/text.py) and sits in front of
these networks in the served model; here `info.input_shape` is (sequence_length,) of int ids
(0 = padding, masked) or (max_tokens,) of multi-hot / TF-IDF values for `bow`.
"""

from __future__ import annotations

from dlrun.models.heads import dense_stack, output_head
from dlrun.registry import MODELS

TAGS = ("text",)


def _vocab(info) -> int:
    return int(getattr(info, "vocab_size", 0) or 20000)


def _embedded(cfg, info):
    import keras

    inp = keras.Input(shape=info.input_shape, dtype="int64", name="tokens")
    x = keras.layers.Embedding(_vocab(info), int(cfg.embedding_dim), mask_zero=True, name="embedding")(inp)
    return inp, x


def _finish(inp, x, cfg, info, name):
    import keras

    x = dense_stack(x, list(cfg.get("dense_units") or []), dropout=float(cfg.dropout))
    if cfg.get("dropout"):
        x = keras.layers.Dropout(float(cfg.dropout), name="head_dropout")(x)
    return keras.Model(inp, output_head(x, info, cfg), name=name)


@MODELS.register("bow", "Bag of words (multi-hot / count / TF-IDF vector, n-grams) -> Dense -> head", tags=TAGS)
def bow(cfg, info):
    import keras

    inp = keras.Input(shape=info.input_shape, name="bag")
    x = inp
    if cfg.get("normalize") == "l2":  # each text's vector to unit length, as scikit-learn's TF-IDF does:
        x = keras.layers.UnitNormalization(name="l2")(x)  # a long review no longer means large activations
    return _finish(inp, x, cfg, info, "bow")


@MODELS.register("embedding_pool", "Embedding -> masked global average pooling -> Dense -> head", tags=TAGS)
def embedding_pool(cfg, info):
    import keras

    inp, x = _embedded(cfg, info)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)  # honours the padding mask
    return _finish(inp, x, cfg, info, "embedding_pool")


def _recurrent(cfg, info, cell: str, bidirectional: bool, name: str):
    import keras

    inp, x = _embedded(cfg, info)
    units = cfg.units
    layers = int(cfg.layers)
    units = list(units) if not isinstance(units, int) and hasattr(units, "__len__") else [int(units)] * layers
    layer_cls = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell]
    for i, u in enumerate(units):
        rnn = layer_cls(int(u), return_sequences=i < len(units) - 1, dropout=float(cfg.recurrent_input_dropout),
                        name=f"{cell}_{i}")
        x = keras.layers.Bidirectional(rnn, name=f"bi_{cell}_{i}")(x) if bidirectional else rnn(x)
    return _finish(inp, x, cfg, info, name)


@MODELS.register("text_lstm", "Embedding -> LSTM stack -> head (text task; `lstm` is the forecaster)", tags=TAGS)
def text_lstm(cfg, info):
    return _recurrent(cfg, info, "lstm", bool(cfg.bidirectional), "text_lstm")


@MODELS.register("text_gru", "Embedding -> GRU stack -> head (text task; `gru` is the forecaster)", tags=TAGS)
def text_gru(cfg, info):
    return _recurrent(cfg, info, "gru", bool(cfg.bidirectional), "text_gru")


@MODELS.register("bilstm", "Embedding -> bidirectional LSTM stack -> head", tags=TAGS)
def bilstm(cfg, info):
    return _recurrent(cfg, info, "lstm", True, "bilstm")


@MODELS.register("cnn1d", "Embedding -> Conv1D blocks -> global max pooling -> head", tags=TAGS)
def cnn1d(cfg, info):
    import keras

    inp, x = _embedded(cfg, info)
    for i, f in enumerate(cfg.get("filters") or [64]):
        x = keras.layers.Conv1D(int(f), int(cfg.kernel_size), padding="same", activation="relu",
                                name=f"conv_{i}")(x)
    x = keras.layers.GlobalMaxPooling1D(name="pool")(x)
    return _finish(inp, x, cfg, info, "cnn1d")


def _layers():
    """The custom layers (dlrun/models/_text_layers.py imports Keras, so only on use)."""
    from dlrun.models import _text_layers

    return {"PositionalEmbedding": _text_layers.PositionalEmbedding, "EncoderBlock": _text_layers.EncoderBlock}




@MODELS.register("transformer", "Token + sinusoidal/learned positions -> N encoder blocks -> pooling -> head",
                 tags=TAGS)
def transformer(cfg, info):
    import keras

    L = _layers()
    inp = keras.Input(shape=info.input_shape, dtype="int64", name="tokens")
    dim = int(cfg.embedding_dim)
    x = L["PositionalEmbedding"](_vocab(info), int(info.input_shape[0]), dim, str(cfg.positions),
                                 name="embedding")(inp)
    for i in range(int(cfg.blocks)):
        x = L["EncoderBlock"](int(cfg.heads), int(cfg.key_dim), int(cfg.ff_dim),
                              float(cfg.attention_dropout), name=f"encoder_{i}")(x)
    pooling = str(cfg.pooling)
    x = keras.layers.GlobalMaxPooling1D(name="pool")(x) if pooling == "max" else \
        keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return _finish(inp, x, cfg, info, "transformer")


@MODELS.register("auto", "Text: the n-gram or the sequence model, chosen from the training texts (model=auto)",
                 tags=TAGS)
def auto(cfg, info):
    """The model the text task chose from the data (its own config travels in info)."""
    from omegaconf import OmegaConf

    chosen = getattr(info, "model_config", None)
    if not chosen:
        from dlrun.errors import DlrunError

        raise DlrunError("model=auto is chosen by the text task from its data", "use it with task=text")
    from dlrun.models import build_model

    return build_model(OmegaConf.create(chosen), info, "text")
