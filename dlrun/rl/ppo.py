"""PPO (clipped surrogate, GAE(lambda), value loss, entropy bonus, approximate KL, minibatches,
gradient clipping, linear LR annealing) on a gymnasium.vector env; discrete (categorical) and
continuous (diagonal Gaussian) actions. The whole update (epochs x minibatches) is one compiled
tf.function; collection calls the network once per vector step for all envs."""

from __future__ import annotations

import math
import time

import gymnasium as gym
import numpy as np

from dlrun.rl.rollout import as_rows, vector_env


def gae(rewards, values, dones, last_value, gamma: float, lam: float):
    """Generalised advantage estimates and returns. rewards/values/dones: (T, N); dones[t] = the
    episode ended at step t (no bootstrap from values[t+1]). A short backward recursion over T
    in numpy (hand-written: it is the definition, and no library offers it on plain arrays)."""
    T = len(rewards)
    adv = np.zeros_like(rewards)
    last = np.zeros_like(last_value)
    for t in reversed(range(T)):
        nxt = last_value if t == T - 1 else values[t + 1]
        nonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * nxt * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv, adv + values


def log_prob_entropy(out, actions, continuous: bool):
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


def clipped_loss(logp, logp_old, adv, clip: float):
    """PPO's clipped surrogate (to minimise) and the fraction of clipped ratios."""
    import tensorflow as tf

    ratio = tf.exp(logp - logp_old)
    loss = -tf.reduce_mean(tf.minimum(ratio * adv, tf.clip_by_value(ratio, 1 - clip, 1 + clip) * adv))
    frac = tf.reduce_mean(tf.cast(tf.abs(ratio - 1.0) > clip, tf.float32))
    return loss, frac


def record(history: dict, metrics: dict) -> None:
    """Append one row; names missing this time (evaluation runs every few updates) get NaN."""
    n = len(next(iter(history.values()), []))
    for k in metrics:
        history.setdefault(k, [math.nan] * n)
    for k, v in history.items():
        v.append(float(metrics.get(k, math.nan)))


SHOWN = ("train/episode_return", "val/mean_return")  # what the progress line shows of a point


def log_point(run, history: dict, steps_log: list, step: int, metrics: dict, model=None, evaluate=None,
              shown=SHOWN) -> None:
    """One logged point of an agent's training loop: the evaluation when one is due (`evaluate`
    given) with the best-weights bookkeeping, then the MLflow row, the progress line and the
    history row."""
    if evaluate is not None:
        metrics["val/mean_return"] = evaluate()
        run.keep_best(model, metrics["val/mean_return"], step)
    run.log(step, metrics)
    run.advance(step, {k.split("/")[1]: v for k, v in metrics.items() if k in shown})
    record(history, metrics)
    steps_log.append(step)


def episode_stats(finished: list, lengths: list, last: int = 20) -> dict:
    """Return and length of the last finished episodes (empty before the first one ends)."""
    recent = finished[-last:]
    if not recent:
        return {}
    return {"train/episode_return": float(np.mean(recent)), "train/return_min": float(np.min(recent)),
            "train/return_max": float(np.max(recent)), "train/episode_length": float(np.mean(lengths[-last:]))}


class PPO:
    def __init__(self, model, env_space, act_space, cfg):
        import keras
        import tensorflow as tf

        self.model, self.cfg = model, cfg
        self.obs_space, self.act_space = env_space, act_space
        self.continuous = isinstance(act_space, gym.spaces.Box)
        self.lr = float(cfg.learning_rate)
        self.opt = keras.optimizers.Adam(self.lr, epsilon=1e-5, global_clipnorm=float(cfg.max_grad_norm))
        self.opt.build(model.trainable_variables)
        c = cfg
        clip, vclip = float(c.clip), bool(c.clip_vloss)
        ent_coef, vf_coef, epochs = float(c.ent_coef), float(c.vf_coef), int(c.epochs)
        n_mb, norm_adv, cont = int(c.minibatches), bool(c.norm_adv), self.continuous

        @tf.function(reduce_retracing=True)
        def act(obs):
            out = model(obs)
            if cont:
                a = out["mean"] + tf.exp(out["log_std"]) * tf.random.normal(tf.shape(out["mean"]))
            else:
                a = tf.random.categorical(out["logits"], 1)[:, 0]
            logp, _ = log_prob_entropy(out, a, cont)
            return a, logp, out["value"][:, 0]

        @tf.function(reduce_retracing=True)
        def value(obs):
            return model(obs)["value"][:, 0]

        @tf.function(reduce_retracing=True)
        def update(obs, actions, logp_old, adv, ret, v_old):
            n = tf.shape(obs)[0]
            mb = n // n_mb
            stats = tf.zeros(6)
            count = 0.0
            for _ in tf.range(epochs):
                idx = tf.random.shuffle(tf.range(n))
                for k in tf.range(n_mb):
                    b = idx[k * mb:(k + 1) * mb]
                    a_b, adv_b = tf.gather(actions, b), tf.gather(adv, b)
                    if norm_adv:
                        adv_b = (adv_b - tf.reduce_mean(adv_b)) / (tf.math.reduce_std(adv_b) + 1e-8)
                    with tf.GradientTape() as tape:
                        out = model(tf.gather(obs, b), training=True)
                        logp, ent = log_prob_entropy(out, a_b, cont)
                        lb = tf.gather(logp_old, b)
                        pg, frac = clipped_loss(logp, lb, adv_b, clip)
                        v = out["value"][:, 0]
                        r_b, vo = tf.gather(ret, b), tf.gather(v_old, b)
                        vl = (v - r_b) ** 2
                        if vclip:
                            vl = tf.maximum(vl, (vo + tf.clip_by_value(v - vo, -clip, clip) - r_b) ** 2)
                        vloss = 0.5 * tf.reduce_mean(vl)
                        entropy = tf.reduce_mean(ent)
                        loss = pg + vf_coef * vloss - ent_coef * entropy
                    grads = tape.gradient(loss, model.trainable_variables)
                    self.opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
                    kl = tf.reduce_mean((tf.exp(logp - lb) - 1) - (logp - lb))  # the low-variance estimator
                    stats += tf.stack([loss, pg, vloss, entropy, kl, frac])
                    count += 1.0
            return stats / count

        self._act, self._value, self._update = act, value, update

    def train(self, factory, run, total_steps: int, seed: int, evaluate, env_cfg, eval_every: int):
        import tensorflow as tf

        c = self.cfg
        n_envs, n_steps = int(env_cfg.num_envs), int(c.n_steps)
        gamma, lam = float(c.gamma), float(c.gae_lambda)
        envs = vector_env(factory, n_envs, str(env_cfg.get("vector", "sync")) == "async")
        obs, _ = envs.reset(seed=seed)
        envs.action_space.seed(seed)
        obs = as_rows(obs, self.obs_space)
        per_update = n_envs * n_steps
        updates = max(1, total_steps // per_update)
        history: dict[str, list] = {}
        steps_log: list[int] = []
        ep_ret, ep_len = np.zeros(n_envs), np.zeros(n_envs, int)
        finished: list[float] = []
        lengths: list[int] = []
        run.progress(updates * per_update, "steps")
        start, step, next_eval = time.perf_counter(), 0, eval_every
        a_shape = self.act_space.shape if self.continuous else ()
        for u in range(updates):
            if run.should_stop:
                break
            if c.anneal_lr:
                self.opt.learning_rate.assign(self.lr * (1.0 - u / updates))
            b_obs = np.zeros((n_steps, n_envs, obs.shape[1]), np.float32)
            b_act = np.zeros((n_steps, n_envs, *a_shape), np.float32)
            b_logp, b_val, b_rew, b_done = (np.zeros((n_steps, n_envs), np.float32) for _ in range(4))
            for t in range(n_steps):
                a, logp, v = self._act(tf.constant(obs))
                a = a.numpy()
                env_a = np.clip(a, self.act_space.low, self.act_space.high) if self.continuous else a
                nxt, r, term, trunc, info = envs.step(env_a)
                r = np.asarray(r, np.float32)
                ep_ret += r  # the env's own reward, before bootstrapping
                done = term | trunc
                if trunc.any():  # bootstrap truncated episodes from their last observation
                    fin = as_rows(np.stack([info["final_obs"][i] for i in np.flatnonzero(trunc)]), self.obs_space)
                    r[trunc] += gamma * self._value(tf.constant(fin)).numpy()
                b_obs[t], b_act[t], b_logp[t], b_val[t], b_rew[t], b_done[t] = obs, a, logp, v, r, done
                ep_len += 1
                for i in np.flatnonzero(done):
                    finished.append(float(ep_ret[i]))
                    lengths.append(int(ep_len[i]))
                    ep_ret[i], ep_len[i] = 0.0, 0
                obs = as_rows(nxt, self.obs_space)
            last_v = self._value(tf.constant(obs)).numpy()
            adv, ret = gae(b_rew, b_val, b_done, last_v, gamma, lam)
            flat = lambda x: x.reshape(n_steps * n_envs, *x.shape[2:])  # noqa: E731
            stats = self._update(*(tf.constant(flat(x)) for x in (b_obs, b_act, b_logp, adv, ret, b_val))).numpy()
            step += per_update
            m = dict(zip(("train/loss", "train/policy_loss", "train/value_loss", "train/entropy", "train/kl",
                          "train/clip_fraction"), map(float, stats), strict=True))
            m["train/lr"] = float(self.opt.learning_rate.numpy())
            m["train/steps_per_second"] = step / (time.perf_counter() - start)
            m.update(episode_stats(finished, lengths))
            due = step >= next_eval or u == updates - 1
            if due:
                next_eval += eval_every
            log_point(run, history, steps_log, step, m, self.model, evaluate if due else None)
        envs.close()
        return history, steps_log, step
