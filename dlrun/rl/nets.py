"""Keras networks of the agents and the served policy built on them.

The agent model (what training updates, what the best-model keeper saves) maps a raw
observation row to the agent's outputs: {"logits", "value"} for discrete PPO, {"mean",
"log_std", "value"} for continuous PPO, {"q_values"} for DQN and tabular Q. The served
policy wraps it: observation in, {"action", "probabilities" | "q_values"} out.
"""

from __future__ import annotations

import math

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="dlrun_rl")
class LogStd(keras.layers.Layer):
    """A state-independent log standard deviation (PPO's diagonal Gaussian), batch-broadcast."""

    def __init__(self, dim: int, init: float = 0.0, **kw):
        super().__init__(**kw)
        self.dim, self.init = int(dim), float(init)
        self.log_std = self.add_weight(shape=(self.dim,), initializer=keras.initializers.Constant(self.init),
                                       name="log_std")

    def call(self, x):
        return keras.ops.zeros_like(x[:, :1]) + self.log_std

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "init": self.init}


@keras.saving.register_keras_serializable(package="dlrun_rl")
class Argmax(keras.layers.Layer):
    """The greedy action (int32) from logits or Q-values."""

    def call(self, x):
        return keras.ops.cast(keras.ops.argmax(x, axis=-1), "int32")


@keras.saving.register_keras_serializable(package="dlrun_rl")
class ObsNorm(keras.layers.Layer):
    """y = clip((x - mean) / sqrt(var + 1e-8), -clip, clip) with non-trainable `mean` and `var`
    (identity-like until set). Training writes the running statistics of the collected
    observations into them (dlrun/rl/rollout.py obs_normalizer); they are saved with the model,
    so the served policy takes raw observations. A layer rather than gymnasium's NormalizeObservation
    wrapper because the wrapper's statistics would stay outside the saved, served model."""

    def __init__(self, clip: float = 10.0, **kw):
        super().__init__(**kw)
        self.clip = float(clip)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.mean = self.add_weight(shape=(dim,), initializer="zeros", trainable=False, name="mean")
        self.var = self.add_weight(shape=(dim,), initializer="ones", trainable=False, name="var")

    def call(self, x):
        y = (x - self.mean) / keras.ops.sqrt(self.var + 1e-8)
        return keras.ops.clip(y, -self.clip, self.clip)

    def get_config(self):
        return {**super().get_config(), "clip": self.clip}


class NumpyMLP:
    """The numpy forward pass of a network built here (obs_scale, optional obs_norm, Dense
    branches `<prefix>_0, <prefix>_1, ...`, Dense heads), on a copy of the weights.

    Hand-written on purpose: agents pick actions once per environment step, and a compiled TF
    call costs ~0.4-0.7 ms of dispatch on CPU, several times the whole forward pass of a 64x64
    MLP on a few rows in numpy (~0.1 ms). Call `sync()` after every update of the weights."""

    ACT = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0), "linear": lambda x: x}

    def __init__(self, model, prefixes, heads):
        self.model, self.heads = model, tuple(heads)
        names = {layer.name for layer in model.layers}
        self.branches = {p: sorted((n for n in names if n.startswith(f"{p}_") and n[len(p) + 1:].isdigit()),
                                   key=lambda n: int(n[len(p) + 1:])) for p in prefixes}
        self.norm = "obs_norm" in names
        self.sync()

    def sync(self) -> None:
        m = self.model
        self.scale = float(m.get_layer("obs_scale").scale)
        self.dense = {}
        for name in [*(n for b in self.branches.values() for n in b), *self.heads]:
            layer = m.get_layer(name)
            k, b = (w.numpy() for w in layer.weights)
            self.dense[name] = (k, b, self.ACT[layer.activation.__name__])
        if self.norm:
            layer = m.get_layer("obs_norm")
            self.mean, self.var, self.clip = layer.mean.numpy(), layer.var.numpy(), float(layer.clip)

    def inputs(self, obs: np.ndarray) -> np.ndarray:
        x = obs * self.scale
        if self.norm:
            x = np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -self.clip, self.clip)
        return x

    def branch(self, x, prefix: str):
        for name in self.branches[prefix]:
            x = self.head(x, name)
        return x

    def head(self, x, name: str):
        k, b, f = self.dense[name]
        return f(x @ k + b)


def _obs_input(obs_dim: int, obs_scale: float, normalize_obs: bool, name: str = "obs_scale"):
    """The observation input, divided by obs_scale, then (normalize_obs) the running ObsNorm."""
    inp = keras.Input((obs_dim,), name="observation", dtype="float32")
    x = keras.layers.Rescaling(1.0 / float(obs_scale), name=name)(inp)
    if normalize_obs:
        x = ObsNorm(name="obs_norm")(x)
    return inp, x


def _mlp(x, hidden, activation, name, out_init=1.0):
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(int(units), activation=activation, name=f"{name}_{i}",
                               kernel_initializer=keras.initializers.Orthogonal(2 ** 0.5))(x)
    return x


def _head(x, units, name, gain):
    return keras.layers.Dense(units, name=name, kernel_initializer=keras.initializers.Orthogonal(gain))(x)


def actor_critic(obs_dim: int, n_out: int, continuous: bool, hidden, activation: str = "tanh",
                 obs_scale: float = 1.0, shared: bool = False, normalize_obs: bool = False) -> keras.Model:
    """PPO's actor and critic MLPs (separate by default) on one observation input."""
    inp, x = _obs_input(obs_dim, obs_scale, normalize_obs)
    a = _mlp(x, hidden, activation, "actor")
    c = a if shared else _mlp(x, hidden, activation, "critic")
    out = {"value": _head(c, 1, "value", 1.0)}
    if continuous:
        out["mean"] = _head(a, n_out, "mean", 0.01)
        out["log_std"] = LogStd(n_out, name="log_std")(x)
    else:
        out["logits"] = _head(a, n_out, "logits", 0.01)
    return keras.Model(inp, out, name="ppo_actor_critic")


def q_network(obs_dim: int, n_actions: int, hidden, activation: str = "relu", obs_scale: float = 1.0,
              normalize_obs: bool = False) -> keras.Model:
    inp, x = _obs_input(obs_dim, obs_scale, normalize_obs)
    x = _mlp(x, hidden, activation, "q")
    return keras.Model(inp, {"q_values": keras.layers.Dense(n_actions, name="q_values")(x)}, name="q_network")


def q_table(n_states: int, n_actions: int) -> keras.Model:
    """A tabular Q function as a Keras model (an Embedding row per state), so it is served and saved
    like every other policy."""
    inp = keras.Input((1,), name="observation", dtype="float32")
    s = keras.layers.Reshape(())(keras.ops.cast(inp, "int32"))
    q = keras.layers.Embedding(n_states, n_actions, embeddings_initializer="zeros", name="q_table")(s)
    return keras.Model(inp, {"q_values": q}, name="q_table")


def served_policy(model: keras.Model) -> keras.Model:
    """Observation row in, the greedy action (plus probabilities or Q-values) out. Continuous
    actions are the Gaussian's mean; the env (or the evaluation loop) clips them to its bounds."""
    inp = keras.Input(model.input.shape[1:], name="observation", dtype="float32")
    out = model(inp)
    if "logits" in out:
        probs = keras.layers.Softmax(name="probabilities")(out["logits"])
        return keras.Model(inp, {"action": Argmax(name="action")(out["logits"]), "probabilities": probs},
                           name="policy")
    if "mean" in out:
        action = keras.layers.Activation("linear", name="action")(out["mean"])
        return keras.Model(inp, {"action": action}, name="policy")
    return keras.Model(inp, {"action": Argmax(name="action")(out["q_values"]), "q_values": out["q_values"]},
                       name="policy")


def ddpg_actor(obs_dim: int, act_dim: int, hidden, activation: str = "relu", obs_scale: float = 1.0,
               bound: float = 1.0, normalize_obs: bool = False) -> keras.Model:
    """DDPG's deterministic policy mu(s): tanh scaled to the (symmetric) action bound, as {"mean"}
    so that the served policy and the evaluation treat it like PPO's Gaussian mean."""
    inp, x = _obs_input(obs_dim, obs_scale, normalize_obs)
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(int(units), activation=activation, name=f"actor_{i}")(x)
    x = keras.layers.Dense(act_dim, activation="tanh", name="mu",
                           kernel_initializer=keras.initializers.RandomUniform(-3e-3, 3e-3))(x)
    return keras.Model(inp, {"mean": keras.layers.Rescaling(float(bound), name="bound")(x)}, name="ddpg_actor")


def critic(obs_dim: int, act_dim: int, hidden, activation: str = "relu", obs_scale: float = 1.0,
           normalize_obs: bool = False) -> keras.Model:
    """DDPG's Q(s, a): observation and action concatenated into an MLP. With normalize_obs it has
    its own "obs_norm" layer, which DDPG's obs_normalizer keeps equal to the actor's."""
    s, x = _obs_input(obs_dim, obs_scale, normalize_obs, name="critic_obs_scale")
    a = keras.Input((act_dim,), name="action", dtype="float32")
    x = keras.layers.Concatenate()([x, a])
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(int(units), activation=activation, name=f"critic_{i}")(x)
    return keras.Model([s, a], keras.layers.Dense(1, name="q")(x), name="ddpg_critic")


def log_prob_entropy(out, actions, continuous: bool):
    """Log-probabilities of `actions` and the entropy under the policy outputs of `actor_critic`
    (a diagonal Gaussian from mean/log_std, or a categorical from logits); PPO and REINFORCE."""
    import tensorflow as tf

    if continuous:
        mean, log_std = out["mean"], out["log_std"]
        std = tf.exp(log_std)
        logp = -0.5 * tf.reduce_sum(((actions - mean) / std) ** 2 + 2 * log_std + math.log(2 * math.pi), axis=-1)
        ent = tf.reduce_sum(log_std + 0.5 * math.log(2 * math.pi * math.e), axis=-1)
        return logp, ent
    logp_all = tf.nn.log_softmax(out["logits"])
    logp = tf.gather(logp_all, tf.cast(actions, tf.int32), batch_dims=1)
    ent = -tf.reduce_sum(tf.exp(logp_all) * logp_all, axis=-1)
    return logp, ent
