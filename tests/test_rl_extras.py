"""RL extras: DQN's prioritised replay (sum tree, sampling, importance weights) and observation /
reward normalisation (the ObsNorm layer, its statistics helper, the reward wrapper), against hand
computations, plus short real `dlrun train` runs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import UnitRun, tiny_ddpg_cfg

import dlrun.rl  # noqa: F401  (registers the environments)


# -- prioritised replay --------------------------------------------------------------------------
def test_sum_tree_totals_and_proportional_sampling():
    from dlrun.rl.dqn import SumTree

    tree = SumTree(4)
    tree.update(np.arange(4), [1.0, 2.0, 3.0, 4.0])
    assert tree.total == 10.0 and tree.tree[2] == 3.0 and tree.tree[3] == 7.0
    rng = np.random.default_rng(0)
    drawn = tree.find(rng.random(40_000) * tree.total)  # plain proportional draws
    assert np.bincount(drawn, minlength=4) / 40_000 == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=0.01)
    strat = np.concatenate([tree.sample(40, rng) for _ in range(1000)])  # stratified batches
    assert np.bincount(strat, minlength=4) / len(strat) == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=0.01)
    # a capacity that is not a power of two: empty (zero) slots are never drawn, even at the edges
    tree = SumTree(5)
    tree.update([0, 2], [0.5, 0.5])
    tree.update([2], [1.5])  # an update replaces the old value in every ancestor
    assert tree.total == 2.0
    assert set(tree.find(np.array([0.0, 0.49, 0.5, 1.99, 2.0]))) == {0, 2}


def test_priority_update_changes_sampling_and_new_transitions_get_the_max():
    from dlrun.rl.dqn import PrioritizedReplay

    buf = PrioritizedReplay(8, 1, seed=0, alpha=1.0, eps=0.0)
    buf.add(np.arange(4.0)[:, None], [0, 1, 0, 1], np.zeros(4), np.zeros((4, 1)), np.zeros(4))
    assert buf.tree.get(np.arange(4)) == pytest.approx([1.0] * 4)  # the initial max priority
    obs = np.concatenate([buf.sample(32)[0][:, 0] for _ in range(200)])
    assert np.bincount(obs.astype(int), minlength=4) / len(obs) == pytest.approx([0.25] * 4, abs=0.02)
    buf.update_priorities(np.array([0, 1, 2, 3]), np.array([0.0, 0.0, 1.0, 3.0]))  # alpha 1: p = |td|
    obs = np.concatenate([buf.sample(32)[0][:, 0] for _ in range(200)])
    assert np.bincount(obs.astype(int), minlength=4) / len(obs) == pytest.approx([0, 0, 0.25, 0.75], abs=0.02)
    buf.add(np.array([[9.0]]), [0], [0.0], np.zeros((1, 1)), [0.0])
    assert buf.max_p == 3.0 and buf.tree.get([4])[0] == 3.0 and buf.tree.total == 7.0
    alpha_buf = PrioritizedReplay(4, 1, seed=0, alpha=0.5, eps=1e-6)
    alpha_buf.add(np.zeros((2, 1)), [0, 0], np.zeros(2), np.zeros((2, 1)), np.zeros(2))
    alpha_buf.update_priorities(np.array([0, 1]), np.array([-4.0, 0.0]))
    assert alpha_buf.tree.get([0, 1]) == pytest.approx([(4 + 1e-6) ** 0.5, 1e-3])


def test_importance_weights_by_hand():
    from dlrun.rl.dqn import importance_weights

    # N = 4, total 10, priorities 1 and 4 in the batch: P = 0.1, 0.4; N P = 0.4, 1.6
    # beta 1: w = 2.5, 0.625 -> / 2.5 = 1, 0.25; beta 0.5: 1/sqrt(.4), 1/sqrt(1.6) -> 1, 0.5
    assert importance_weights([1.0, 4.0], 10.0, 4, 1.0) == pytest.approx([1.0, 0.25])
    assert importance_weights([1.0, 4.0], 10.0, 4, 0.5) == pytest.approx([1.0, 0.5])
    assert importance_weights([2.0, 2.0], 10.0, 4, 0.4) == pytest.approx([1.0, 1.0])


def test_dqn_prioritized_train_step_returns_td_errors(compose):
    import tensorflow as tf
    from omegaconf import OmegaConf

    from dlrun.rl.dqn import DQN
    from dlrun.rl.nets import q_network

    cfg = compose("task=rl", "agent=dqn", "agent.prioritized=true").agent
    model = q_network(2, 2, [8])
    agent = DQN(model, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), OmegaConf.create(cfg))
    assert agent.beta(0, 100) == pytest.approx(0.4) and agent.beta(50, 100) == pytest.approx(0.7)
    assert agent.beta(200, 100) == 1.0
    obs = tf.constant([[0.1, 0.2], [0.3, -0.4]])
    q = model(obs)["q_values"].numpy()
    rew = tf.constant([1.0, -2.0])
    loss, _, td = agent._train(obs, tf.constant([0, 1]), rew, obs, tf.constant([1.0, 1.0]), tf.constant([1.0, 0.5]))
    want = np.abs(rew.numpy() - q[[0, 1], [0, 1]])  # terminal: y = r
    assert td.numpy() == pytest.approx(want, rel=1e-5)
    huber = np.where(want < 1, 0.5 * want ** 2, want - 0.5)
    assert float(loss) == pytest.approx(np.mean(huber * [1.0, 0.5]), rel=1e-5)


def test_dqn_phase_in_one_call_equals_its_gradient_steps_one_by_one(compose):
    import tensorflow as tf
    from omegaconf import OmegaConf

    from dlrun.rl.dqn import DQN
    from dlrun.rl.nets import NumpyMLP, q_network

    cfg = OmegaConf.create(compose("task=rl", "agent=dqn").agent)
    rng = np.random.default_rng(0)
    g, b = 3, 5
    batch = [rng.standard_normal((g, b, 2)).astype(np.float32), rng.integers(0, 2, (g, b)).astype(np.int32),
             rng.standard_normal((g, b)).astype(np.float32), rng.standard_normal((g, b, 2)).astype(np.float32),
             (rng.random((g, b)) < 0.3).astype(np.float32)]
    weights, losses = {}, {}
    for mode in ("phase", "steps"):
        model = q_network(2, 2, [8])
        model.set_weights([np.full_like(w, 0.1 * (i + 1)) for i, w in enumerate(model.get_weights())])
        agent = DQN(model, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), cfg)
        if mode == "phase":
            losses[mode] = float(agent._phase(*map(tf.constant, batch))[0])
        else:
            losses[mode] = np.mean([float(agent._train(*(tf.constant(x[k]) for x in batch))[0]) for k in range(g)])
        weights[mode] = model.get_weights()
    assert losses["phase"] == pytest.approx(losses["steps"], rel=1e-5)
    assert all(np.allclose(a, c, atol=1e-6) for a, c in zip(weights["phase"], weights["steps"], strict=True))
    # the numpy Q-network that picks the greedy actions answers like the Keras model
    q = NumpyMLP(model, ("q",), ("q_values",))
    rows = rng.standard_normal((4, 2)).astype(np.float32)
    assert np.allclose(q.head(q.branch(q.inputs(rows), "q"), "q_values"), model(rows)["q_values"].numpy(), atol=1e-5)


# -- observation and reward normalisation --------------------------------------------------------
def test_obs_norm_layer_matches_numpy_and_survives_a_keras_round_trip(tmp_path):
    import keras

    from dlrun.rl.nets import ObsNorm, q_network

    layer = ObsNorm(clip=2.0)
    x = np.array([[1.0, 10.0], [3.0, -50.0]], np.float32)
    layer.build(x.shape)
    layer.mean.assign([2.0, 0.0])
    layer.var.assign([4.0, 100.0])
    want = np.clip((x - [2.0, 0.0]) / np.sqrt(np.array([4.0, 100.0]) + 1e-8), -2, 2)  # [[-.5, 1], [.5, -2]]
    assert np.asarray(layer(x)) == pytest.approx(want, rel=1e-6)
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 2

    model = q_network(2, 3, [4], normalize_obs=True)
    model.get_layer("obs_norm").mean.assign([1.0, -1.0])
    model.get_layer("obs_norm").var.assign([9.0, 0.25])
    model.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    assert np.asarray(back.get_layer("obs_norm").var) == pytest.approx([9.0, 0.25])
    assert np.asarray(back(x)["q_values"]) == pytest.approx(np.asarray(model(x)["q_values"]), rel=1e-5)


def test_obs_normalizer_tracks_rescaled_rows_and_is_a_no_op_without_the_layer():
    from dlrun.rl.nets import actor_critic, q_network
    from dlrun.rl.rollout import obs_normalizer

    model = actor_critic(2, 2, False, [4], obs_scale=10.0, normalize_obs=True)
    norm = obs_normalizer(model)
    rng = np.random.default_rng(0)
    rows = rng.normal([5.0, -20.0], [1.0, 4.0], (500, 2))
    for chunk in np.split(rows, 10):
        norm.update(chunk)
    layer = model.get_layer("obs_norm")
    # statistics of what the layer sees: the rows divided by obs_scale
    assert np.asarray(layer.mean) == pytest.approx(rows.mean(0) / 10, rel=1e-4)
    assert np.asarray(layer.var) == pytest.approx(rows.var(0) / 100, rel=1e-3)
    plain = q_network(2, 2, [4])
    before = [w.copy() for w in plain.get_weights()]
    noop = obs_normalizer(plain)
    noop.update(rows)
    assert not noop.active and all(np.array_equal(a, b) for a, b in zip(before, plain.get_weights(), strict=True))


def test_normalized_reward_env_reports_raw_episode_returns():
    from dlrun.rl.rollout import finished_episodes, vector_env

    envs = vector_env(lambda: gym.make("CartPole-v1"), 2, normalize_reward=True, gamma=0.99)
    envs.reset(seed=0)
    rewards, done_eps = [], []
    while len(done_eps) < 4:
        _, r, _, _, info = envs.step(envs.action_space.sample())
        rewards.append(r)
        done_eps += finished_episodes(info)
    envs.close()
    assert not np.allclose(np.concatenate(rewards), 1.0)  # the agent sees scaled rewards ...
    assert all(ret == length for _, ret, length in done_eps)  # ... the log sees CartPole's +1 per step


# -- end to end ----------------------------------------------------------------------------------
def test_cli_dqn_prioritized_smoke(run_dlrun, runs):
    run_dlrun("train", "experiment=cartpole_dqn", "agent.prioritized=true", "task.total_steps=600",
              "agent.learning_starts=200", "agent.train_freq=100", "agent.gradient_steps=4", "agent.log_every=200",
              "task.eval.episodes=2", "task.eval.during=1", "task.eval.every_steps=600")
    run = runs()[0]
    m = run.data.metrics
    assert run.info.status == "FINISHED" and {"train/td_loss", "train/per_beta", "test/mean_return"} <= set(m)
    assert np.isfinite(m["train/td_loss"]) and 0.4 < m["train/per_beta"] <= 1.0


@pytest.mark.parametrize("agent", [("experiment=cartpole_reinforce", "agent.episodes_per_update=2"),
                                   ("experiment=cartpole_ppo", "agent.n_steps=75")])
def test_cli_normalized_obs_and_reward_log_raw_returns(run_dlrun, runs, mlflow_client, agent):
    run_dlrun("train", *agent, "env.num_envs=2", "env.normalize_obs=true", "env.normalize_reward=true",
              "task.total_steps=600", "task.eval.episodes=3", "task.eval.during=1", "task.eval.every_steps=300")
    run = runs()[0]
    returns = [p.value for k in ("train/return_min", "train/return_max")
               for p in mlflow_client.get_metric_history(run.info.run_id, k)]
    # CartPole's own units (+1 a step: whole numbers), not normalised rewards
    assert returns and all(r >= 8 and float(r).is_integer() for r in returns)
    # the served policy (its normalisation inside) answers raw observations: dlrun eval feeds it
    # raw ones and gets the trained agent's test return exactly
    run_dlrun("eval", f"run_id={run.info.run_id}")
    history = [h.value for h in mlflow_client.get_metric_history(run.info.run_id, "test/mean_return")]
    assert len(history) == 2 and history[0] == history[1]


def test_normalisation_needs_a_network_agent(compose):
    from dlrun.errors import DlrunError
    from dlrun.tasks.rl import RLTask

    cfg = compose("task=rl", "agent=q_learning", "env=gridworld", "env.normalize_reward=true")
    with pytest.raises(DlrunError, match="normalize_reward"):
        RLTask().data(cfg, 1)


def test_ddpg_shares_one_set_of_observation_statistics_across_its_four_networks():
    from dlrun.rl.ddpg import DDPG
    from dlrun.rl.learn import learn
    from dlrun.rl.nets import ddpg_actor

    cfg = tiny_ddpg_cfg()
    env = gym.make("Pendulum-v1")
    agent = DDPG(ddpg_actor(3, 1, [8], bound=2.0, normalize_obs=True), env.observation_space, env.action_space, cfg,
                 env_cfg={"normalize_obs": True, "normalize_reward": True})
    learn(agent, UnitRun(), lambda: gym.make("Pendulum-v1"), 0, 250, 250, lambda: 0.0)
    means = [np.asarray(m.get_layer("obs_norm").mean) for m in (agent.actor, agent.critic, agent.actor_t, agent.critic_t)]
    assert np.abs(means[0]).max() > 0.01  # updated from the collected rows (cos, sin, angular velocity)
    assert all(m == pytest.approx(means[0], abs=1e-6) for m in means[1:])
