"""REINFORCE (Monte Carlo policy gradient) with an optional learned value baseline, discrete actions.

Whole episodes are collected on a gymnasium.vector env (one network call per vector step for all
envs); when `episodes_per_update` episodes have finished, their discounted returns-to-go G_t give
one gradient step on

    - mean(log pi(a_t|s_t) * (G_t - b(s_t)))  +  vf_coef * 0.5 * mean((V(s_t) - G_t)^2)  -  ent_coef * H

with b = V (stopped gradient) when `baseline` is on, else b = 0. The network is PPO's actor-critic
(dlrun/rl/nets.py); without a baseline its value head is simply not trained. The gradient step is
one compiled tf.function.
"""

from __future__ import annotations

import numpy as np

from dlrun.rl.learn import Agent
from dlrun.rl.nets import log_prob_entropy
from dlrun.rl.rollout import (
    as_rows,
    env_option,
    episode_stats,
    finished_episodes,
    obs_normalizer,
    training_env,
)


def returns_to_go(rewards, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1} for one finished episode (a backward loop: the definition)."""
    g, out = 0.0, np.zeros(len(rewards), np.float32)
    for t in reversed(range(len(rewards))):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def reinforce_loss(logp, returns, values, baseline: bool, norm_adv: bool):
    """The policy-gradient loss (to minimise) and the advantages it used."""
    import tensorflow as tf

    adv = returns - tf.stop_gradient(values) if baseline else returns
    if norm_adv:
        adv = (adv - tf.reduce_mean(adv)) / (tf.math.reduce_std(adv) + 1e-8)
    return -tf.reduce_mean(logp * tf.stop_gradient(adv)), adv


class Reinforce(Agent):
    def __init__(self, model, obs_space, act_space, cfg, env_cfg=None):
        import keras
        import tensorflow as tf

        self.model, self.cfg, self.obs_space, self.act_space = model, cfg, obs_space, act_space
        self.env_cfg = env_cfg or {}
        self.opt = keras.optimizers.Adam(float(cfg.learning_rate), global_clipnorm=float(cfg.max_grad_norm))
        self.opt.build(model.trainable_variables)
        baseline, norm_adv = bool(cfg.baseline), bool(cfg.norm_adv)
        vf_coef, ent_coef = float(cfg.vf_coef), float(cfg.ent_coef)

        @tf.function(reduce_retracing=True)
        def act(obs):
            return tf.random.categorical(model(obs)["logits"], 1)[:, 0]

        @tf.function(reduce_retracing=True)
        def update(obs, actions, returns):
            with tf.GradientTape() as tape:
                out = model(obs, training=True)
                logp, ent = log_prob_entropy(out, actions, False)
                v = out["value"][:, 0]
                pg, _ = reinforce_loss(logp, returns, v, baseline, norm_adv)
                vloss = 0.5 * tf.reduce_mean((v - returns) ** 2) if baseline else tf.constant(0.0)
                entropy = tf.reduce_mean(ent)
                loss = pg + vf_coef * vloss - ent_coef * entropy
            grads = tape.gradient(loss, model.trainable_variables)
            grads = [tf.zeros_like(w) if g is None else g for g, w in zip(grads, model.trainable_variables,
                                                                            strict=True)]
            self.opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return tf.stack([loss, pg, vloss, entropy])

        self._act, self._update = act, update

    def start(self, factory, seed: int, total_steps: int, every: int) -> int:
        self.num_envs = int(env_option(self.env_cfg, "num_envs"))
        self.envs = training_env(factory, self.num_envs, self.env_cfg, float(self.cfg.gamma))
        obs, _ = self.envs.reset(seed=seed)
        self.obs = as_rows(obs, self.obs_space)
        self.norm = obs_normalizer(self.model)
        self.norm.update(self.obs)
        self.bufs = [([], [], []) for _ in range(self.num_envs)]  # per env: observations, actions, rewards
        self.finished, self.lengths = [], []
        self.total, self.steps = int(total_steps), 0
        return self.total

    def learn(self) -> dict:
        """Env steps until `episodes_per_update` episodes have finished (or the budget is spent),
        then one gradient step on them."""
        import tensorflow as tf

        gamma, per_update = float(self.cfg.gamma), int(self.cfg.episodes_per_update)
        batch: list[tuple] = []  # finished episodes for this update
        while len(batch) < per_update and self.steps < self.total:
            obs = self.obs
            a = self._act(tf.constant(obs)).numpy()
            nxt, r, term, trunc, info = self.envs.step(a)
            for i in range(self.num_envs):
                self.bufs[i][0].append(obs[i])
                self.bufs[i][1].append(a[i])
                self.bufs[i][2].append(float(r[i]))
            self.steps += self.num_envs
            for i, ret, length in finished_episodes(info):  # truncation ends the episode too (no bootstrap)
                o, acts, rews = self.bufs[i]
                batch.append((np.stack(o), np.asarray(acts, np.int32), returns_to_go(rews, gamma)))
                self.finished.append(ret)  # the env's own units even when the rewards `r` are normalised
                self.lengths.append(length)
                self.bufs[i] = ([], [], [])
            self.obs = as_rows(nxt, self.obs_space)
            self.norm.update(self.obs)
        m = {}
        if batch:
            b_obs, b_act, b_ret = (np.concatenate(x) for x in zip(*batch, strict=True))
            stats = self._update(tf.constant(b_obs), tf.constant(b_act), tf.constant(b_ret)).numpy()
            m.update(dict(zip(("loss", "policy_loss", "value_loss", "entropy"), map(float, stats), strict=True)))
        m.update(episode_stats(self.finished, self.lengths))
        return m

    def close(self) -> None:
        self.envs.close()
