"""The sampler of the char-level language model: raw prompt strings in, generated text out.

Hand-written: Keras has no layer that samples from a recurrent language model. It steps the
trained network's own layers (embedding, each RNN layer's cell, the logits Dense) one
character at a time inside one `tf.while_loop`, so it runs in the served Keras model (MLflow
pyfunc, `dlrun predict`, SavedModel) with no Python loop per character.

Prompts of different lengths share a batch: at step t a row reads its own prompt's character
t while t < its length (teacher forcing through the prompt), then its previous sample; each
row keeps the `length` samples after its prompt's end. `length`, `temperature` and `seed` are
non-trainable variables saved with the model (their defaults come from task.generate) and set
by `dlrun predict length=... temperature=... seed=...`. Sampling is stateless (seeded by
(seed, step)), so one prompt and seed give one text; temperature 0 is greedy. The unknown-
character id 0 is never sampled. An empty prompt starts from a newline.

Its own module (imports Keras at the top) so that the served model's loader imports it first;
dlrun.models skips modules starting with "_" at CLI start.
"""

import keras
import tensorflow as tf

OOV = "[UNK]"


@keras.saving.register_keras_serializable(package="dlrun_char")
class CharGenerator(keras.layers.Layer):
    """prompt strings (batch,) -> [generated continuation (batch,), prompt + continuation (batch,)]."""

    def __init__(self, net, vocabulary, length=200, temperature=0.5, seed=0, **kw):
        super().__init__(**kw)
        if isinstance(net, dict):
            net = keras.saving.deserialize_keras_object(net)
        self.net = net
        self.vocabulary = [str(c) for c in vocabulary]  # id i + 1 is vocabulary[i]; 0 is unknown
        self.defaults = {"length": int(length), "temperature": float(temperature), "seed": int(seed)}
        self.lookup = keras.layers.StringLookup(vocabulary=self.vocabulary, num_oov_indices=1, oov_token=OOV,
                                                name="char_lookup")
        self.embedding = net.get_layer("embedding")
        self.rnns = [layer for layer in net.layers if layer.name.startswith("rnn_")]
        self.head = net.get_layer("logits")
        self.length = self.add_weight(shape=(), dtype="int32", trainable=False, name="length",
                                      initializer=keras.initializers.Constant(int(length)))
        self.temperature = self.add_weight(shape=(), dtype="float32", trainable=False, name="temperature",
                                           initializer=keras.initializers.Constant(float(temperature)))
        self.seed = self.add_weight(shape=(), dtype="int32", trainable=False, name="seed",
                                    initializer=keras.initializers.Constant(int(seed)))

    def build(self, input_shape):
        self.built = True  # nothing to create: the network's layers are built, the variables exist

    def set(self, length=None, temperature=None, seed=None):
        """Change the sampling settings (what `dlrun predict` passes)."""
        for var, value in ((self.length, length), (self.temperature, temperature), (self.seed, seed)):
            if value is not None:
                var.assign(value)

    def compute_output_spec(self, prompts):
        return [keras.KerasTensor(prompts.shape, dtype="string"), keras.KerasTensor(prompts.shape, dtype="string")]

    def call(self, prompts):
        prompts = tf.reshape(tf.convert_to_tensor(prompts), [-1])
        started = tf.where(tf.strings.length(prompts) > 0, prompts, tf.fill(tf.shape(prompts), "\n"))
        chars = tf.strings.unicode_split(started, "UTF-8")
        lengths = tf.cast(chars.row_lengths(), tf.int32)
        ids = tf.cast(self.lookup(chars.to_tensor(default_value=OOV)), tf.int32)  # (batch, longest prompt)
        batch, longest = tf.shape(ids)[0], tf.shape(ids)[1]
        length = tf.maximum(tf.convert_to_tensor(self.length), 1)
        temperature = tf.convert_to_tensor(self.temperature)
        seed = tf.cast(tf.convert_to_tensor(self.seed), tf.int32)
        steps = tf.reduce_max(lengths) - 1 + length
        never_unknown = tf.concat([[-1e9], tf.zeros([len(self.vocabulary)])], axis=0)
        states = [list(layer.cell.get_initial_state(batch_size=batch)) for layer in self.rnns]  # [h, c] / [h]

        def body(t, x, states, out):
            h = self.embedding(x)
            new_states = []
            for layer, state in zip(self.rnns, states, strict=True):
                h, state = layer.cell(h, state, training=False)
                new_states.append(list(state))
            logits = tf.cast(self.head(h), tf.float32) + never_unknown
            greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
            drawn = tf.random.stateless_categorical(logits / tf.maximum(temperature, 1e-6), 1, seed=tf.stack([seed, t]),
                                                    dtype=tf.int32)[:, 0]
            sample = tf.where(temperature > 0, drawn, greedy)
            prompt_next = tf.gather(ids, tf.minimum(t + 1, longest - 1), axis=1)
            return t + 1, tf.where(t + 1 < lengths, prompt_next, sample), new_states, out.write(t, sample)

        out = tf.TensorArray(tf.int32, size=steps)
        _, _, _, out = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), ids[:, 0], states, out))
        samples = tf.transpose(out.stack())  # (batch, steps)
        keep = (lengths - 1)[:, None] + tf.range(length)[None, :]
        table = tf.constant([OOV, *self.vocabulary])
        generated = tf.strings.reduce_join(tf.gather(table, tf.gather(samples, keep, batch_dims=1)), axis=1)
        return [generated, tf.strings.join([prompts, generated])]

    def get_config(self):
        config = super().get_config()
        config.update(net=keras.saving.serialize_keras_object(self.net), vocabulary=self.vocabulary, **self.defaults)
        return config


def served_generator(net, vocabulary, length: int, temperature: float, seed: int = 0):
    """The served model: a column `prompt` of raw strings -> `generated` and `text` (prompt + generated)."""
    inp = keras.Input(shape=(), dtype="string", name="prompt")
    generated, text = CharGenerator(net, vocabulary, length, temperature, seed, name="generator")(inp)
    return keras.Model({"prompt": inp}, {"generated": generated, "text": text}, name=f"served_{net.name}")
