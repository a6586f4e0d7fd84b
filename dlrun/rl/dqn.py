"""DQN: replay buffer, target network (hard copy every N steps, or soft tau), linear epsilon
schedule from 1.0, Double DQN switch, Huber loss, learning starts and train frequency, on a
gymnasium.vector env. The gradient step is one compiled tf.function."""

from __future__ import annotations

import time

import numpy as np

from dlrun.rl.ppo import log_point
from dlrun.rl.rollout import as_rows, vector_env


class Replay:
    """A ring buffer of transitions; uniform sampling (numpy: a few arrays, nothing to import)."""

    def __init__(self, size: int, obs_dim: int, seed: int):
        self.size, self.n, self.i = int(size), 0, 0
        self.obs = np.zeros((self.size, obs_dim), np.float32)
        self.next = np.zeros((self.size, obs_dim), np.float32)
        self.act = np.zeros(self.size, np.int32)
        self.rew = np.zeros(self.size, np.float32)
        self.done = np.zeros(self.size, np.float32)
        self.rng = np.random.default_rng(seed)

    def add(self, obs, act, rew, nxt, done):
        for k in range(len(obs)):
            j = self.i
            self.obs[j], self.act[j], self.rew[j], self.next[j], self.done[j] = obs[k], act[k], rew[k], nxt[k], done[k]
            self.i = (self.i + 1) % self.size
            self.n = min(self.n + 1, self.size)

    def sample(self, batch: int):
        idx = self.rng.integers(0, self.n, batch)
        return self.obs[idx], self.act[idx], self.rew[idx], self.next[idx], self.done[idx]


def td_targets(q_next_online, q_next_target, rewards, dones, gamma: float, double: bool):
    """r + gamma * Q_target(s', a*) with a* = argmax Q_target (DQN) or argmax Q_online (Double DQN)."""
    import tensorflow as tf

    a = tf.argmax(q_next_online if double else q_next_target, axis=-1, output_type=tf.int32)
    q = tf.gather(q_next_target, a, batch_dims=1)
    return rewards + gamma * (1.0 - dones) * q


class DQN:
    def __init__(self, model, obs_space, act_space, cfg):
        import keras
        import tensorflow as tf

        self.model, self.cfg, self.obs_space, self.act_space = model, cfg, obs_space, act_space
        self.target = keras.models.clone_model(model)
        self.target.set_weights(model.get_weights())
        self.opt = keras.optimizers.Adam(float(cfg.learning_rate), global_clipnorm=float(cfg.max_grad_norm))
        self.opt.build(model.trainable_variables)
        gamma, double = float(cfg.gamma), bool(cfg.double)
        huber = keras.losses.Huber()
        target = self.target

        @tf.function(reduce_retracing=True)
        def q_values(obs):
            return model(obs)["q_values"]

        @tf.function(reduce_retracing=True)
        def train_step(obs, act, rew, nxt, done):
            y = td_targets(model(nxt)["q_values"], target(nxt)["q_values"], rew, done, gamma, double)
            with tf.GradientTape() as tape:
                q = tf.gather(model(obs, training=True)["q_values"], act, batch_dims=1)
                loss = huber(tf.stop_gradient(y), q)
            grads = tape.gradient(loss, model.trainable_variables)
            self.opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss, tf.reduce_mean(q)

        @tf.function
        def soft_update(tau):
            for t, s in zip(target.weights, model.weights, strict=True):
                t.assign((1.0 - tau) * t + tau * s)

        self._q, self._train, self._soft = q_values, train_step, soft_update

    def epsilon(self, step: int, total: int) -> float:
        c = self.cfg
        frac = min(1.0, step / max(1.0, float(c.exploration_fraction) * total))
        return float(c.epsilon_start + frac * (c.epsilon_end - c.epsilon_start))

    def train(self, factory, run, total_steps: int, seed: int, evaluate, eval_every: int, num_envs: int = 1):
        import tensorflow as tf

        c = self.cfg
        envs = vector_env(factory, num_envs)
        obs, _ = envs.reset(seed=seed)
        obs = as_rows(obs, self.obs_space)
        rng = np.random.default_rng(seed)
        buf = Replay(int(c.buffer_size), obs.shape[1], seed)
        n_act = int(self.act_space.n)
        history: dict[str, list] = {}
        steps_log: list[int] = []
        ep_ret, finished = np.zeros(num_envs), []
        losses, qs = [], []
        run.progress(total_steps, "steps")
        step, next_eval, next_log, start = 0, eval_every, int(c.log_every), time.perf_counter()
        tau = float(c.tau)
        while step < total_steps and not run.should_stop:
            eps = self.epsilon(step, total_steps)
            greedy = self._q(tf.constant(obs)).numpy().argmax(axis=1)
            explore = rng.random(num_envs) < eps
            a = np.where(explore, rng.integers(0, n_act, num_envs), greedy)
            nxt, r, term, trunc, info = envs.step(a)
            nxt = as_rows(nxt, self.obs_space)
            real_next = nxt.copy()
            for i in np.flatnonzero(term | trunc):  # the true last observation, not the reset one
                real_next[i] = as_rows([info["final_obs"][i]], self.obs_space)[0]
            buf.add(obs, a, r, real_next, term.astype(np.float32))  # truncation still bootstraps
            ep_ret += r
            for i in np.flatnonzero(term | trunc):
                finished.append(float(ep_ret[i]))
                ep_ret[i] = 0.0
            obs = nxt
            step += num_envs
            if step >= int(c.learning_starts) and step % int(c.train_freq) < num_envs:
                for _ in range(int(c.gradient_steps)):
                    loss, q = self._train(*(tf.constant(x) for x in buf.sample(int(c.batch_size))))
                    losses.append(float(loss))
                    qs.append(float(q))
                if tau < 1.0:
                    self._soft(tf.constant(tau))
            if tau >= 1.0 and step % int(c.target_update) < num_envs:
                self.target.set_weights(self.model.get_weights())
            if step >= next_log or step >= total_steps:
                next_log += int(c.log_every)
                m = {"train/epsilon": eps, "train/steps_per_second": step / (time.perf_counter() - start)}
                if losses:
                    m.update({"train/td_loss": float(np.mean(losses)), "train/q_mean": float(np.mean(qs))})
                    losses, qs = [], []
                if finished:
                    m["train/episode_return"] = float(np.mean(finished[-20:]))
                due = step >= next_eval or step >= total_steps
                if due:
                    next_eval += eval_every
                log_point(run, history, steps_log, step, m, self.model, evaluate if due else None)
        envs.close()
        return history, steps_log, step
