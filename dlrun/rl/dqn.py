"""DQN: replay buffer, target network (hard copy every N steps, or soft tau), linear epsilon
schedule from 1.0, Double DQN switch, Huber loss, learning starts and train frequency, on a
gymnasium.vector env. The gradient step is one compiled tf.function.

`prioritized: true` replaces the uniform buffer with proportional prioritised replay (Schaul et
al. 2016): priority p_i = (|TD error| + eps)^alpha, P(i) = p_i / sum p, importance weights
w_i = (N P(i))^-beta / max_batch w with beta annealed linearly from beta_start to 1 over the run;
new transitions get the largest priority so far."""

from __future__ import annotations

import numpy as np

from dlrun.rl.learn import Agent
from dlrun.rl.nets import NumpyMLP
from dlrun.rl.rollout import as_rows, env_option, finished_episodes, obs_normalizer, training_env


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


class SumTree:
    """Binary sum tree over `capacity` leaves (padded to a power of two) in one numpy array:
    node k holds the sum of its children 2k and 2k+1, the root (node 1) the total. Updates and
    lookups handle a whole batch per level (log2(capacity) numpy steps). Hand-written: no library
    among dlrun's dependencies (numpy, TensorFlow/Keras, gymnasium) offers one."""

    def __init__(self, capacity: int):
        self.cap = 1 << max(0, int(capacity - 1).bit_length())
        self.depth = self.cap.bit_length() - 1
        self.tree = np.zeros(2 * self.cap, np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def get(self, idx) -> np.ndarray:
        return self.tree[self.cap + np.asarray(idx)]

    def update(self, idx, values) -> None:
        """Set the leaves `idx` to `values` (later duplicates win) and refresh their ancestors."""
        node = self.cap + np.asarray(idx, np.int64)
        self.tree[node] = values
        for _ in range(self.depth):
            node = np.unique(node // 2)
            self.tree[node] = self.tree[2 * node] + self.tree[2 * node + 1]

    def find(self, values) -> np.ndarray:
        """Leaf index of each prefix-sum value in [0, total): descend the tree for the whole batch.
        A branch with zero mass is never taken, so an empty slot is never returned."""
        v = np.asarray(values, np.float64).copy()
        node = np.ones(len(v), np.int64)
        for _ in range(self.depth):
            left = 2 * node
            lv, rv = self.tree[left], self.tree[left + 1]
            right = (v >= lv) & (rv > 0)
            v = np.where(right, v - lv, v)
            node = np.where(right, left + 1, left)
        return node - self.cap

    def sample(self, batch: int, rng) -> np.ndarray:
        """Stratified: one uniform draw in each of `batch` equal segments of the total."""
        seg = self.total / batch
        return self.find((np.arange(batch) + rng.random(batch)) * seg)


def importance_weights(priorities, total: float, n: int, beta: float) -> np.ndarray:
    """w_i = (n P(i))^-beta with P(i) = p_i / total, divided by the batch's largest weight (as in
    Dopamine's prioritised replay), so that the weights only ever scale the updates down."""
    w = (n * np.asarray(priorities, np.float64) / total) ** -beta
    return (w / w.max()).astype(np.float32)


class PrioritizedReplay(Replay):
    """Replay with proportional prioritised sampling over a SumTree (Schaul et al. 2016)."""

    def __init__(self, size: int, obs_dim: int, seed: int, alpha: float = 0.6, eps: float = 1e-6):
        super().__init__(size, obs_dim, seed)
        self.tree, self.alpha, self.eps, self.max_p = SumTree(self.size), float(alpha), float(eps), 1.0

    def add(self, obs, act, rew, nxt, done):
        slots = (self.i + np.arange(len(obs))) % self.size
        super().add(obs, act, rew, nxt, done)
        self.tree.update(slots, np.full(len(slots), self.max_p))  # new: the largest priority so far

    def sample(self, batch: int, beta: float = 1.0):
        """The transitions, their importance weights and their slots (for update_priorities)."""
        idx = self.tree.sample(batch, self.rng)
        w = importance_weights(self.tree.get(idx), self.tree.total, self.n, beta)
        return self.obs[idx], self.act[idx], self.rew[idx], self.next[idx], self.done[idx], w, idx

    def update_priorities(self, idx, td_abs) -> None:
        p = (np.abs(np.asarray(td_abs, np.float64)) + self.eps) ** self.alpha
        self.tree.update(idx, p)
        self.max_p = max(self.max_p, float(p.max()))


def td_targets(q_next_online, q_next_target, rewards, dones, gamma: float, double: bool):
    """r + gamma * Q_target(s', a*) with a* = argmax Q_target (DQN) or argmax Q_online (Double DQN)."""
    import tensorflow as tf

    a = tf.argmax(q_next_online if double else q_next_target, axis=-1, output_type=tf.int32)
    q = tf.gather(q_next_target, a, batch_dims=1)
    return rewards + gamma * (1.0 - dones) * q


class DQN(Agent):
    def __init__(self, model, obs_space, act_space, cfg, env_cfg=None):
        import keras
        import tensorflow as tf

        self.model, self.cfg, self.obs_space, self.act_space = model, cfg, obs_space, act_space
        self.env_cfg = env_cfg or {}
        self.target = keras.models.clone_model(model)
        self.target.set_weights(model.get_weights())
        self.opt = keras.optimizers.Adam(float(cfg.learning_rate), global_clipnorm=float(cfg.max_grad_norm))
        self.opt.build(model.trainable_variables)
        gamma, double = float(cfg.gamma), bool(cfg.double)
        self.prioritized = prioritized = bool(cfg.prioritized)
        huber = keras.losses.Huber()
        huber_each = keras.losses.Huber(reduction=None)
        target = self.target

        @tf.function(reduce_retracing=True)
        def train_step(obs, act, rew, nxt, done, weights=None):
            """Uniform: the mean Huber loss. Prioritised (`weights` given): mean of Huber x weight,
            and the per-sample |TD error| comes back for the priority update."""
            y = td_targets(model(nxt)["q_values"], target(nxt)["q_values"], rew, done, gamma, double)
            with tf.GradientTape() as tape:
                q = tf.gather(model(obs, training=True)["q_values"], act, batch_dims=1)
                if prioritized:
                    loss = tf.reduce_mean(huber_each(tf.stop_gradient(y)[:, None], q[:, None]) * weights)
                else:
                    loss = huber(tf.stop_gradient(y), q)
            grads = tape.gradient(loss, model.trainable_variables)
            self.opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            if prioritized:
                return loss, tf.reduce_mean(q), tf.abs(y - q)
            return loss, tf.reduce_mean(q)

        @tf.function(reduce_retracing=True)
        def train_phase(obs, act, rew, nxt, done):
            """Uniform replay: all of a phase's gradient steps in one compiled call (batches
            stacked on a leading axis; the target network is fixed within a phase)."""
            loss_sum, q_sum = 0.0, 0.0
            for g in tf.range(tf.shape(obs)[0]):
                loss, q = train_step(obs[g], act[g], rew[g], nxt[g], done[g])
                loss_sum += loss
                q_sum += q
            n = tf.cast(tf.shape(obs)[0], tf.float32)
            return loss_sum / n, q_sum / n

        @tf.function
        def soft_update(tau):
            for t, s in zip(target.weights, model.weights, strict=True):
                t.assign((1.0 - tau) * t + tau * s)

        self._train, self._phase, self._soft = train_step, train_phase, soft_update

    def epsilon(self, step: int, total: int) -> float:
        c = self.cfg
        frac = min(1.0, step / max(1.0, float(c.exploration_fraction) * total))
        return float(c.epsilon_start + frac * (c.epsilon_end - c.epsilon_start))

    def beta(self, step: int, total: int) -> float:
        """Prioritised replay's importance-sampling exponent: beta_start -> 1 linearly over the run."""
        b0 = float(self.cfg.beta_start)
        return b0 + (1.0 - b0) * min(1.0, step / max(1, total))

    def start(self, factory, seed: int, total_steps: int, every: int) -> int:
        c = self.cfg
        self.num_envs = int(env_option(self.env_cfg, "num_envs"))
        self.envs = training_env(factory, self.num_envs, self.env_cfg, float(c.gamma))
        obs, _ = self.envs.reset(seed=seed)
        self.obs = as_rows(obs, self.obs_space)
        self.norm = obs_normalizer(self.model, self.target)
        self.norm.update(self.obs)
        self.q_net = NumpyMLP(self.model, ("q",), ("q_values",))  # greedy actions without a TF call per step
        self.copied = True  # the target equals the model (no gradient step since the last copy)
        self.rng = np.random.default_rng(seed)
        if self.prioritized:
            self.buf = PrioritizedReplay(int(c.buffer_size), self.obs.shape[1], seed, float(c.alpha),
                                         float(c.priority_eps))
        else:
            self.buf = Replay(int(c.buffer_size), self.obs.shape[1], seed)
        self.total, self.steps, self.next_log = int(total_steps), 0, int(c.log_every)
        self.finished = []
        return self.total

    def learn(self) -> dict:
        """Env steps (training phases every train_freq) until the next `log_every` row."""
        losses, qs = [], []
        while self.steps < min(self.next_log, self.total):
            eps = self._step(losses, qs)
        self.next_log += int(self.cfg.log_every)
        m = {"epsilon": eps}
        if self.prioritized:
            m["per_beta"] = self.beta(self.steps, self.total)
        if losses:
            m.update({"td_loss": float(np.mean(losses)), "q_mean": float(np.mean(qs))})
        if self.finished:
            m["episode_return"] = float(np.mean(self.finished[-20:]))
        return m

    def _step(self, losses: list, qs: list) -> float:
        """One vector env step, and a training phase when one is due; returns the epsilon used."""
        import tensorflow as tf

        c, num_envs, obs, step, total = self.cfg, self.num_envs, self.obs, self.steps, self.total
        eps = self.epsilon(step, total)
        q_net = self.q_net
        greedy = q_net.head(q_net.branch(q_net.inputs(obs), "q"), "q_values").argmax(axis=1)
        explore = self.rng.random(num_envs) < eps
        a = np.where(explore, self.rng.integers(0, int(self.act_space.n), num_envs), greedy)
        nxt, r, term, trunc, info = self.envs.step(a)
        nxt = as_rows(nxt, self.obs_space)
        real_next = nxt.copy()
        for i in np.flatnonzero(term | trunc):  # the true last observation, not the reset one
            real_next[i] = as_rows([info["final_obs"][i]], self.obs_space)[0]
        buf = self.buf
        buf.add(obs, a, r, real_next, term.astype(np.float32))  # truncation still bootstraps
        self.finished += [ret for _, ret, _ in finished_episodes(info)]  # raw returns, even if r is normalised
        self.norm.update(nxt, write=False)
        self.obs = nxt
        self.steps = step = step + num_envs
        if step >= int(c.learning_starts) and step % int(c.train_freq) < num_envs:
            self.norm.write()
            if self.prioritized:  # sampling depends on the priorities the previous step updated
                for _ in range(int(c.gradient_steps)):
                    *batch, idx = buf.sample(int(c.batch_size), self.beta(step, total))
                    loss, q, td = self._train(*(tf.constant(x) for x in batch))
                    buf.update_priorities(idx, td.numpy())
                    losses.append(float(loss))
                    qs.append(float(q))
            else:
                g, b = int(c.gradient_steps), int(c.batch_size)
                batch = buf.sample(g * b)
                loss, q = self._phase(*(tf.constant(x.reshape(g, b, *x.shape[1:])) for x in batch))
                losses.append(float(loss))
                qs.append(float(q))
            if float(c.tau) < 1.0:
                self._soft(tf.constant(float(c.tau)))
            q_net.sync()
            self.copied = False
        if float(c.tau) >= 1.0 and step % int(c.target_update) < num_envs and not self.copied:
            self.target.set_weights(self.model.get_weights())
            self.copied = True
        return eps

    def close(self) -> None:
        self.envs.close()
