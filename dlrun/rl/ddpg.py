"""DDPG for continuous actions (the course's exercise; Pendulum-v1 by default).

A deterministic actor mu(s) (tanh, scaled to the action bound; the saved and served model) and a
critic Q(s, a), each with a target copy moved by soft updates: target <- (1 - tau) target + tau
online. Exploration adds Gaussian (or Ornstein-Uhlenbeck) noise to mu(s); the first
`learning_starts` steps act uniformly at random. Every `train_freq` env steps, `gradient_steps`
minibatches are drawn from the replay buffer at once and trained in one compiled tf.function:

    critic: mean (Q(s, a) - (r + gamma (1 - done) Q'(s', mu'(s'))))^2
    actor:  -mean Q(s, mu(s))
"""

from __future__ import annotations

import time

import numpy as np

from dlrun.rl.dqn import Replay
from dlrun.rl.ppo import log_point
from dlrun.rl.rollout import as_rows, finished_episodes, has_layer, obs_normalizer, training_env


class ContinuousReplay(Replay):
    """DQN's ring buffer with action vectors instead of action indices."""

    def __init__(self, size: int, obs_dim: int, act_dim: int, seed: int):
        super().__init__(size, obs_dim, seed)
        self.act = np.zeros((self.size, act_dim), np.float32)


def soft_update(target_vars, source_vars, tau: float) -> None:
    """Polyak averaging of Keras/TF variables: t <- (1 - tau) t + tau s."""
    for t, s in zip(target_vars, source_vars, strict=True):
        t.assign((1.0 - tau) * t + tau * s)


class OUNoise:
    """Ornstein-Uhlenbeck noise: dx = theta (0 - x) dt + sigma sqrt(dt) N(0, 1) (temporally correlated)."""

    def __init__(self, shape, sigma: float, rng, theta: float = 0.15, dt: float = 1e-2):
        self.x, self.sigma, self.rng, self.theta, self.dt = np.zeros(shape), sigma, rng, theta, dt

    def __call__(self):
        self.x = self.x - self.theta * self.x * self.dt + self.sigma * np.sqrt(self.dt) * self.rng.normal(
            size=self.x.shape)
        return self.x

    def reset(self, idx):
        self.x[idx] = 0.0


class DDPG:
    def __init__(self, actor, obs_space, act_space, cfg):
        import keras
        import tensorflow as tf

        from dlrun.rl.nets import critic

        self.actor, self.cfg, self.obs_space, self.act_space = actor, cfg, obs_space, act_space
        obs_dim, act_dim = actor.input.shape[1], int(np.prod(act_space.shape))
        normalize_obs = has_layer(actor, "obs_norm")  # env.normalize_obs
        self.critic = critic(obs_dim, act_dim, list(cfg.critic_hidden), str(cfg.activation),
                             float(actor.get_layer("obs_scale").scale) ** -1, normalize_obs)
        self.actor_t, self.critic_t = keras.models.clone_model(actor), keras.models.clone_model(self.critic)
        self.actor_t.set_weights(actor.get_weights())
        self.critic_t.set_weights(self.critic.get_weights())
        self.a_opt = keras.optimizers.Adam(float(cfg.actor_lr))
        self.c_opt = keras.optimizers.Adam(float(cfg.critic_lr))
        self.a_opt.build(actor.trainable_variables)
        self.c_opt.build(self.critic.trainable_variables)
        gamma, tau = float(cfg.gamma), float(cfg.tau)
        crit, actor_t, critic_t = self.critic, self.actor_t, self.critic_t

        @tf.function(reduce_retracing=True)
        def act(obs):
            return actor(obs)["mean"]

        @tf.function(reduce_retracing=True)
        def train(obs, acts, rews, nxt, done):  # (n, batch, ...): n gradient steps in one call
            stats = tf.zeros(3)
            n = tf.shape(obs)[0]
            for i in tf.range(n):
                o, a, r, o2, d = obs[i], acts[i], rews[i], nxt[i], done[i]
                y = r + gamma * (1.0 - d) * critic_t([o2, actor_t(o2)["mean"]])[:, 0]
                with tf.GradientTape() as tape:
                    q = crit([o, a], training=True)[:, 0]
                    c_loss = tf.reduce_mean((q - tf.stop_gradient(y)) ** 2)
                grads = tape.gradient(c_loss, crit.trainable_variables)
                self.c_opt.apply_gradients(zip(grads, crit.trainable_variables, strict=True))
                with tf.GradientTape() as tape:
                    a_loss = -tf.reduce_mean(crit([o, actor(o, training=True)["mean"]])[:, 0])
                grads = tape.gradient(a_loss, actor.trainable_variables)
                self.a_opt.apply_gradients(zip(grads, actor.trainable_variables, strict=True))
                soft_update(actor_t.weights, actor.weights, tau)
                soft_update(critic_t.weights, crit.weights, tau)
                stats += tf.stack([c_loss, a_loss, tf.reduce_mean(q)])
            return stats / tf.cast(n, tf.float32)

        self._act, self._train = act, train

    def train(self, factory, run, total_steps: int, seed: int, evaluate, eval_every: int, num_envs: int = 1,
              env_cfg=None):
        import tensorflow as tf

        c = self.cfg
        envs = training_env(factory, num_envs, env_cfg, float(c.gamma))
        obs, _ = envs.reset(seed=seed)
        envs.action_space.seed(seed)
        obs = as_rows(obs, self.obs_space)
        # one set of statistics in all four networks' "obs_norm" layers (actor, critic, targets)
        norm = obs_normalizer(self.actor, self.critic, self.actor_t, self.critic_t)
        norm.update(obs)
        rng = np.random.default_rng(seed)
        low, high = self.act_space.low, self.act_space.high
        act_dim = int(np.prod(self.act_space.shape))
        buf = ContinuousReplay(int(c.buffer_size), obs.shape[1], act_dim, seed)
        sigma = float(c.noise_std) * float(np.max(high))
        ou = OUNoise((num_envs, act_dim), sigma, rng) if str(c.noise) == "ou" else None
        history: dict[str, list] = {}
        steps_log: list[int] = []
        finished, stats = [], None
        run.progress(total_steps, "steps")
        step, next_eval, next_log, start = 0, eval_every, int(c.log_every), time.perf_counter()
        n_grad, batch = int(c.gradient_steps), int(c.batch_size)
        while step < total_steps and not run.should_stop:
            if step < int(c.learning_starts):
                a = rng.uniform(low, high, (num_envs, act_dim)).astype(np.float32)
            else:
                noise = ou() if ou is not None else rng.normal(0.0, sigma, (num_envs, act_dim))
                a = np.clip(self._act(tf.constant(obs)).numpy() + noise, low, high).astype(np.float32)
            nxt, r, term, trunc, info = envs.step(a)
            nxt = as_rows(nxt, self.obs_space)
            real_next = nxt.copy()
            for i in np.flatnonzero(term | trunc):  # the true last observation, not the reset one
                real_next[i] = as_rows([info["final_obs"][i]], self.obs_space)[0]
            buf.add(obs, a, r, real_next, term.astype(np.float32))  # truncation still bootstraps
            for i, ret, _ in finished_episodes(info):  # raw returns, even when `r` is normalised
                finished.append(ret)
                if ou is not None:
                    ou.reset(i)
            norm.update(nxt)
            obs = nxt
            step += num_envs
            if step >= int(c.learning_starts) and step % int(c.train_freq) < num_envs:
                sample = [buf.sample(batch) for _ in range(n_grad)]
                stats = self._train(*(tf.constant(np.stack(x)) for x in zip(*sample, strict=True))).numpy()
            if step >= next_log or step >= total_steps:
                next_log += int(c.log_every)
                m = {"train/steps_per_second": step / (time.perf_counter() - start)}
                if stats is not None:
                    m.update({"train/critic_loss": float(stats[0]), "train/actor_loss": float(stats[1]),
                              "train/q_mean": float(stats[2])})
                if finished:
                    m["train/episode_return"] = float(np.mean(finished[-10:]))
                due = step >= next_eval or step >= total_steps
                if due:
                    next_eval += eval_every
                log_point(run, history, steps_log, step, m, self.actor, evaluate if due else None)
        envs.close()
        return history, steps_log, step
