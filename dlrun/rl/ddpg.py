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

import numpy as np

from dlrun.rl.dqn import Replay
from dlrun.rl.learn import Agent
from dlrun.rl.rollout import as_rows, env_option, finished_episodes, has_layer, obs_normalizer, training_env


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


class DDPG(Agent):
    def __init__(self, actor, obs_space, act_space, cfg, env_cfg=None):
        import keras
        import tensorflow as tf

        from dlrun.rl.nets import critic

        self.actor, self.cfg, self.obs_space, self.act_space = actor, cfg, obs_space, act_space
        self.model, self.env_cfg = actor, env_cfg or {}  # the actor is what is evaluated, kept and served
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

    def start(self, factory, seed: int, total_steps: int, every: int) -> int:
        c = self.cfg
        self.num_envs = int(env_option(self.env_cfg, "num_envs"))
        self.envs = training_env(factory, self.num_envs, self.env_cfg, float(c.gamma))
        obs, _ = self.envs.reset(seed=seed)
        self.envs.action_space.seed(seed)
        self.obs = as_rows(obs, self.obs_space)
        # one set of statistics in all four networks' "obs_norm" layers (actor, critic, targets)
        self.norm = obs_normalizer(self.actor, self.critic, self.actor_t, self.critic_t)
        self.norm.update(self.obs)
        self.rng = np.random.default_rng(seed)
        act_dim = int(np.prod(self.act_space.shape))
        self.buf = ContinuousReplay(int(c.buffer_size), self.obs.shape[1], act_dim, seed)
        self.sigma = float(c.noise_std) * float(np.max(self.act_space.high))
        self.ou = OUNoise((self.num_envs, act_dim), self.sigma, self.rng) if str(c.noise) == "ou" else None
        self.finished, self.stats = [], None
        self.total, self.steps, self.next_log = int(total_steps), 0, int(c.log_every)
        return self.total

    def learn(self) -> dict:
        """Env steps (training phases every train_freq) until the next `log_every` row."""
        while self.steps < min(self.next_log, self.total):
            self._step()
        self.next_log += int(self.cfg.log_every)
        m = {}
        if self.stats is not None:
            m.update({"critic_loss": float(self.stats[0]), "actor_loss": float(self.stats[1]),
                      "q_mean": float(self.stats[2])})
        if self.finished:
            m["episode_return"] = float(np.mean(self.finished[-10:]))
        return m

    def _step(self) -> None:
        import tensorflow as tf

        c, num_envs, obs = self.cfg, self.num_envs, self.obs
        low, high = self.act_space.low, self.act_space.high
        act_dim = int(np.prod(self.act_space.shape))
        if self.steps < int(c.learning_starts):
            a = self.rng.uniform(low, high, (num_envs, act_dim)).astype(np.float32)
        else:
            noise = self.ou() if self.ou is not None else self.rng.normal(0.0, self.sigma, (num_envs, act_dim))
            a = np.clip(self._act(tf.constant(obs)).numpy() + noise, low, high).astype(np.float32)
        nxt, r, term, trunc, info = self.envs.step(a)
        nxt = as_rows(nxt, self.obs_space)
        real_next = nxt.copy()
        for i in np.flatnonzero(term | trunc):  # the true last observation, not the reset one
            real_next[i] = as_rows([info["final_obs"][i]], self.obs_space)[0]
        self.buf.add(obs, a, r, real_next, term.astype(np.float32))  # truncation still bootstraps
        for i, ret, _ in finished_episodes(info):  # raw returns, even when `r` is normalised
            self.finished.append(ret)
            if self.ou is not None:
                self.ou.reset(i)
        self.norm.update(nxt)
        self.obs = nxt
        self.steps += num_envs
        if self.steps >= int(c.learning_starts) and self.steps % int(c.train_freq) < num_envs:
            sample = [self.buf.sample(int(c.batch_size)) for _ in range(int(c.gradient_steps))]
            self.stats = self._train(*(tf.constant(np.stack(x)) for x in zip(*sample, strict=True))).numpy()

    def close(self) -> None:
        self.envs.close()
