"""PPO (clipped surrogate and/or adaptive KL penalty, GAE(lambda), value loss, entropy bonus,
approximate KL with optional early stop, minibatches, gradient clipping, linear LR annealing) on a
gymnasium.vector env; discrete (categorical) and continuous (diagonal Gaussian) actions.

Speed: the whole update (epochs x minibatches, early stop included) is one compiled tf.function
(XLA with `jit_compile`); collection evaluates the policy once per vector step for all envs, in
numpy on the current weights (`NumpyPolicy`), because a TF call costs more than the whole
forward pass of these small MLPs."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from dlrun.rl.learn import Agent
from dlrun.rl.nets import NumpyMLP, log_prob_entropy
from dlrun.rl.rollout import (
    as_rows,
    env_option,
    episode_stats,
    finished_episodes,
    obs_normalizer,
    training_env,
)


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


def clipped_loss(logp, logp_old, adv, clip: float | None):
    """PPO's clipped surrogate (to minimise) and the fraction of clipped ratios; clip=None is the
    plain importance-weighted surrogate (for the KL-penalty variant)."""
    import tensorflow as tf

    ratio = tf.exp(logp - logp_old)
    if clip is None:
        return -tf.reduce_mean(ratio * adv), tf.zeros(())
    loss = -tf.reduce_mean(tf.minimum(ratio * adv, tf.clip_by_value(ratio, 1 - clip, 1 + clip) * adv))
    frac = tf.reduce_mean(tf.cast(tf.abs(ratio - 1.0) > clip, tf.float32))
    return loss, frac


def approx_kl(logp, logp_old):
    """KL(pi_old || pi) estimated from log-probabilities of the taken actions: mean((r - 1) - log r),
    r = pi/pi_old (non-negative, low variance; differentiable, so it also serves as the penalty)."""
    import tensorflow as tf

    log_ratio = logp - logp_old
    return tf.reduce_mean(tf.exp(log_ratio) - 1.0 - log_ratio)


def adapt_kl_coef(beta: float, kl: float, target: float) -> float:
    """The adaptive KL-penalty coefficient (Schulman et al. 2017, PPO paper section 4): double it
    when the update moved the policy more than 1.5x the target, halve it below target/1.5."""
    if kl > 1.5 * target:
        return beta * 2.0
    if kl < target / 1.5:
        return beta / 2.0
    return beta


class NumpyPolicy(NumpyMLP):
    """PPO's actor-critic in numpy for collection (see nets.NumpyMLP for why): sampled actions,
    their log-probabilities and the values. Checked against the Keras model in tests/test_rl.py."""

    def __init__(self, model, continuous: bool, seed: int):
        self.continuous = continuous
        self.rng = np.random.default_rng(seed)
        super().__init__(model, ("actor", "critic"), ("value", "mean" if continuous else "logits"))

    def sync(self) -> None:
        super().sync()
        if self.continuous:
            self.log_std = self.model.get_layer("log_std").log_std.numpy()

    def outputs(self, obs: np.ndarray) -> dict:
        x = self.inputs(obs)
        a = self.branch(x, "actor")
        c = self.branch(x, "critic") if self.branches["critic"] else a
        out = {"value": self.head(c, "value")}
        if self.continuous:
            out["mean"] = self.head(a, "mean")
            out["log_std"] = np.broadcast_to(self.log_std, out["mean"].shape)
        else:
            out["logits"] = self.head(a, "logits")
        return out

    def act(self, obs: np.ndarray):
        """Sampled actions, their log-probabilities and the values, for a batch of rows."""
        out = self.outputs(obs)
        if self.continuous:
            mean, log_std = out["mean"], out["log_std"]
            a = mean + np.exp(log_std) * self.rng.standard_normal(mean.shape)
            logp = -0.5 * (((a - mean) / np.exp(log_std)) ** 2 + 2 * log_std + math.log(2 * math.pi)).sum(-1)
        else:
            z = out["logits"] - out["logits"].max(-1, keepdims=True)
            logp_all = z - np.log(np.exp(z).sum(-1, keepdims=True))
            a = np.argmax(logp_all + self.rng.gumbel(size=logp_all.shape), axis=-1)  # Gumbel-max sampling
            logp = np.take_along_axis(logp_all, a[:, None], -1)[:, 0]
        return a, logp.astype(np.float32), out["value"][:, 0].astype(np.float32)

    def value(self, obs: np.ndarray) -> np.ndarray:
        x = self.inputs(obs)
        c = self.branch(x, "critic" if self.branches["critic"] else "actor")
        return self.head(c, "value")[:, 0].astype(np.float32)


class PPO(Agent):
    def __init__(self, model, env_space, act_space, cfg, env_cfg=None):
        import keras
        import tensorflow as tf

        self.model, self.cfg, self.env_cfg = model, cfg, env_cfg or {}
        self.obs_space, self.act_space = env_space, act_space
        self.continuous = isinstance(act_space, gym.spaces.Box)
        self.lr = float(cfg.learning_rate)
        self.opt = keras.optimizers.Adam(self.lr, epsilon=1e-5, global_clipnorm=float(cfg.max_grad_norm))
        self.opt.build(model.trainable_variables)
        c = cfg
        clip = None if c.get("clip") is None else float(c.clip)
        vclip = bool(c.clip_vloss)
        if clip is None and vclip:
            vclip = False  # value clipping reuses the policy's clip range
        ent_coef, vf_coef, epochs = float(c.ent_coef), float(c.vf_coef), int(c.epochs)
        n_mb, norm_adv, cont = int(c.minibatches), bool(c.norm_adv), self.continuous
        target_kl = c.get("target_kl")
        stop_kl = math.inf if target_kl is None else 1.5 * float(target_kl)  # early stop threshold
        # the KL penalty's coefficient beta: a variable, so adapting it does not retrace the update
        self.kl_coef = tf.Variable(float(c.get("kl_coef", 0.0) or 0.0), trainable=False, dtype=tf.float32)
        self.kl_target = c.get("kl_target") if float(c.get("kl_coef", 0.0) or 0.0) > 0 else None
        beta = self.kl_coef
        vclip_range = clip if clip is not None else 0.0

        variables = model.trainable_variables

        # Written with explicit tf.while_loop / tf.cond instead of autograph: converting the
        # function costs ~1-2 s at the first update, a third of CartPole's time to solve.
        def update(obs, actions, logp_old, adv, ret, v_old):
            n = tf.shape(obs)[0]
            mb = n // n_mb

            def minibatch(idx, k, stats, count):
                """One gradient step on minibatch k of the permutation idx, unless its KL is
                already past the early-stop threshold: (stats, count, stopped)."""
                b = idx[k * mb:(k + 1) * mb]
                a_b, adv_b = tf.gather(actions, b), tf.gather(adv, b)
                if norm_adv:
                    adv_b = (adv_b - tf.reduce_mean(adv_b)) / (tf.math.reduce_std(adv_b) + 1e-8)
                with tf.GradientTape() as tape:
                    out = model(tf.gather(obs, b), training=True)
                    logp, ent = log_prob_entropy(out, a_b, cont)
                    lb = tf.gather(logp_old, b)
                    pg, frac = clipped_loss(logp, lb, adv_b, clip)
                    kl = approx_kl(logp, lb)
                    v = out["value"][:, 0]
                    r_b, vo = tf.gather(ret, b), tf.gather(v_old, b)
                    vl = (v - r_b) ** 2
                    if vclip:
                        vl = tf.maximum(vl, (vo + tf.clip_by_value(v - vo, -vclip_range, vclip_range) - r_b) ** 2)
                    vloss = 0.5 * tf.reduce_mean(vl)
                    entropy = tf.reduce_mean(ent)
                    loss = pg + beta * kl + vf_coef * vloss - ent_coef * entropy

                def step():
                    grads = tape.gradient(loss, variables)
                    self.opt.apply_gradients(zip(grads, variables, strict=True))
                    return stats + tf.stack([loss, pg, vloss, entropy, kl, frac]), count + 1.0

                if math.isinf(stop_kl):  # no early stop: no branch in the graph
                    return (*step(), tf.constant(False))
                too_far = kl > stop_kl  # this minibatch already moved the policy too far
                stats, count = tf.cond(too_far, lambda: (stats, count), step)
                return stats, count, too_far

            def epoch(e, stats, count, done, stop):
                idx = tf.random.shuffle(tf.range(n))
                _, stats, count, stop = tf.while_loop(
                    lambda k, s, c, st: tf.logical_and(k < n_mb, tf.logical_not(st)),
                    lambda k, s, c, st: (k + 1, *minibatch(idx, k, s, c)),
                    (tf.constant(0), stats, count, stop))
                return e + 1, stats, count, done + tf.cast(tf.logical_not(stop), tf.float32), stop

            _, stats, count, epochs_run, _ = tf.while_loop(
                lambda e, s, c, d, st: tf.logical_and(e < epochs, tf.logical_not(st)), epoch,
                (tf.constant(0), tf.zeros(6), tf.constant(0.0), tf.constant(0.0), tf.constant(False)))
            return tf.concat([stats / tf.maximum(count, 1.0), [epochs_run]], 0)

        self._update = tf.function(update, reduce_retracing=True, autograph=False,
                                   jit_compile=bool(c.get("jit_compile", False)))

    def start(self, factory, seed: int, total_steps: int, every: int) -> int:
        c, env_cfg = self.cfg, self.env_cfg
        self.n_envs, self.n_steps = int(env_option(env_cfg, "num_envs")), int(c.n_steps)
        self.envs = training_env(factory, self.n_envs, env_cfg, float(c.gamma))
        obs, _ = self.envs.reset(seed=seed)
        self.envs.action_space.seed(seed)
        self.obs = as_rows(obs, self.obs_space)
        # env.normalize_obs: statistics fixed during a rollout and its update (the stored
        # log-probabilities were computed with them), refreshed from each rollout afterwards
        self.norm = obs_normalizer(self.model)
        self.norm.update(self.obs)
        self.policy = NumpyPolicy(self.model, self.continuous, seed)
        self.per_update = self.n_envs * self.n_steps
        self.updates, self.u, self.steps = max(1, total_steps // self.per_update), 0, 0
        self.finished, self.lengths = [], []
        return self.updates * self.per_update

    def learn(self) -> dict:
        """One rollout of n_steps x num_envs and one update on it."""
        import tensorflow as tf

        c, n_steps, n_envs, obs = self.cfg, self.n_steps, self.n_envs, self.obs
        gamma, lam = float(c.gamma), float(c.gae_lambda)
        if c.anneal_lr:
            self.opt.learning_rate.assign(self.lr * (1.0 - self.u / self.updates))
        a_shape = self.act_space.shape if self.continuous else ()
        b_obs = np.zeros((n_steps, n_envs, obs.shape[1]), np.float32)
        b_act = np.zeros((n_steps, n_envs, *a_shape), np.float32)
        b_logp, b_val, b_rew, b_done = (np.zeros((n_steps, n_envs), np.float32) for _ in range(4))
        for t in range(n_steps):
            a, logp, v = self.policy.act(obs)
            env_a = np.clip(a, self.act_space.low, self.act_space.high) if self.continuous else a
            nxt, r, term, trunc, info = self.envs.step(env_a)
            r = np.asarray(r, np.float32)  # normalised with env.normalize_reward
            done = term | trunc
            if trunc.any():  # bootstrap truncated episodes from their last observation
                fin = as_rows(np.stack([info["final_obs"][i] for i in np.flatnonzero(trunc)]), self.obs_space)
                r[trunc] += gamma * self.policy.value(fin)
            b_obs[t], b_act[t], b_logp[t], b_val[t], b_rew[t], b_done[t] = obs, a, logp, v, r, done
            for _, ret_i, len_i in finished_episodes(info):  # raw returns (RecordEpisodeStatistics)
                self.finished.append(ret_i)
                self.lengths.append(len_i)
            obs = as_rows(nxt, self.obs_space)
        self.obs = obs
        adv, ret = gae(b_rew, b_val, b_done, self.policy.value(obs), gamma, lam)
        flat = lambda x: x.reshape(n_steps * n_envs, *x.shape[2:])  # noqa: E731
        stats = self._update(*(tf.constant(flat(x)) for x in (b_obs, b_act, b_logp, adv, ret, b_val))).numpy()
        self.norm.update(flat(b_obs))
        self.policy.sync()
        self.u += 1
        self.steps += self.per_update
        names = ("loss", "policy_loss", "value_loss", "entropy", "kl", "clip_fraction", "epochs_run")
        m = dict(zip(names, map(float, stats), strict=True))
        m["learning_rate"] = float(self.opt.learning_rate.numpy())
        if self.kl_target is not None:  # the KL penalty is on and adapts toward kl_target
            m["kl_coef"] = float(self.kl_coef.numpy())
            self.kl_coef.assign(adapt_kl_coef(m["kl_coef"], m["kl"], float(self.kl_target)))
        m.update(episode_stats(self.finished, self.lengths))
        return m

    def close(self) -> None:
        self.envs.close()
