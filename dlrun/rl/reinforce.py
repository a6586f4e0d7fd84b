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

import time

import numpy as np

from dlrun.rl.ppo import episode_stats, log_point, log_prob_entropy
from dlrun.rl.rollout import as_rows, finished_episodes, obs_normalizer, training_env


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


class Reinforce:
    def __init__(self, model, obs_space, act_space, cfg):
        import keras
        import tensorflow as tf

        self.model, self.cfg, self.obs_space, self.act_space = model, cfg, obs_space, act_space
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

    def train(self, factory, run, total_steps: int, seed: int, evaluate, eval_every: int, num_envs: int,
              env_cfg=None):
        import tensorflow as tf

        c = self.cfg
        gamma, per_update = float(c.gamma), int(c.episodes_per_update)
        envs = training_env(factory, num_envs, env_cfg, gamma)
        obs, _ = envs.reset(seed=seed)
        obs = as_rows(obs, self.obs_space)
        norm = obs_normalizer(self.model)
        norm.update(obs)
        bufs = [([], [], []) for _ in range(num_envs)]  # per env: observations, actions, rewards
        batch: list[tuple] = []  # finished episodes waiting for the next update
        finished: list[float] = []
        lengths: list[int] = []
        history: dict[str, list] = {}
        steps_log: list[int] = []
        run.progress(total_steps, "steps")
        step, next_eval, start = 0, eval_every, time.perf_counter()
        while step < total_steps and not run.should_stop:
            a = self._act(tf.constant(obs)).numpy()
            nxt, r, term, trunc, info = envs.step(a)
            for i in range(num_envs):
                bufs[i][0].append(obs[i])
                bufs[i][1].append(a[i])
                bufs[i][2].append(float(r[i]))
            step += num_envs
            for i, ret, length in finished_episodes(info):  # truncation ends the episode too (no bootstrap)
                o, acts, rews = bufs[i]
                batch.append((np.stack(o), np.asarray(acts, np.int32), returns_to_go(rews, gamma)))
                finished.append(ret)  # the env's own units even when the rewards `r` are normalised
                lengths.append(length)
                bufs[i] = ([], [], [])
            obs = as_rows(nxt, self.obs_space)
            norm.update(obs)
            if len(batch) < per_update and step < total_steps:
                continue
            m = {"train/steps_per_second": step / (time.perf_counter() - start)}
            if batch:
                b_obs, b_act, b_ret = (np.concatenate(x) for x in zip(*batch, strict=True))
                stats = self._update(tf.constant(b_obs), tf.constant(b_act), tf.constant(b_ret)).numpy()
                m.update(dict(zip(("train/loss", "train/policy_loss", "train/value_loss", "train/entropy"),
                                  map(float, stats), strict=True)))
                batch = []
            m.update(episode_stats(finished, lengths))
            due = step >= next_eval or step >= total_steps
            if due:
                next_eval += eval_every
            log_point(run, history, steps_log, step, m, self.model, evaluate if due else None)
        envs.close()
        return history, steps_log, step
