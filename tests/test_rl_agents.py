"""The course's simpler RL agents: REINFORCE, Monte Carlo control, the k-armed bandit (pieces against
hand computations, and one short real `dlrun train` run of each preset)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import UnitRun, tiny_ddpg_cfg

import dlrun.rl  # noqa: F401  (registers the environments)


def test_returns_to_go_and_the_reinforce_loss():
    import tensorflow as tf

    from dlrun.rl.reinforce import reinforce_loss, returns_to_go

    assert returns_to_go([1.0, 0.0, 2.0], 0.5) == pytest.approx([1.5, 1.0, 2.0])  # 1 + .5*(0 + .5*2)
    logp = tf.math.log(tf.constant([0.5, 0.25]))
    ret, v = tf.constant([3.0, 1.0]), tf.constant([1.0, 2.0])
    loss, adv = reinforce_loss(logp, ret, v, baseline=True, norm_adv=False)
    # advantages 2 and -1: -(ln .5 * 2 + ln .25 * -1) / 2 = -(-1.386 + 1.386) / 2 = 0
    assert list(adv.numpy()) == [2.0, -1.0] and float(loss) == pytest.approx(0.0, abs=1e-6)
    loss, _ = reinforce_loss(logp, ret, v, baseline=False, norm_adv=False)
    assert float(loss) == pytest.approx(-(np.log(0.5) * 3 + np.log(0.25) * 1) / 2, rel=1e-6)


def test_mc_control_reproduces_the_course_worked_example():
    from dlrun.rl.mc_control import mc_update

    # six steps of -0.1 then -1 (gamma 1, alpha 0.1), each on a different cell, Q starting at 0
    episode = [(s, 0, -0.1) for s in range(6)] + [(6, 0, -1.0)]
    q = np.zeros((7, 4))
    deltas = mc_update(q, episode, alpha=0.1, gamma=1.0)
    assert deltas == pytest.approx([-0.16, -0.15, -0.14, -0.13, -0.12, -0.11, -0.10])  # returns -1.6 ... -1
    assert q[:, 0] == pytest.approx([-0.16, -0.15, -0.14, -0.13, -0.12, -0.11, -0.10])


def test_mc_control_every_visit_and_first_visit_differ_on_a_revisited_pair():
    from dlrun.rl.mc_control import mc_update

    episode = [(0, 1, 1.0), (0, 1, 2.0)]  # returns 3 (first visit) and 2
    q = np.zeros((1, 2))
    mc_update(q, episode, alpha=0.5, gamma=1.0)  # backwards: 0 -> 1 (G=2), then 1 -> 2 (G=3)
    assert q[0, 1] == pytest.approx(2.0)
    q = np.zeros((1, 2))
    assert mc_update(q, episode, alpha=0.5, gamma=1.0, first_visit=True) == pytest.approx([1.5, 0.0])


def test_bandit_incremental_mean_and_ucb_choice():
    from dlrun.rl.bandit import choose, incremental_mean

    q, means = 0.0, []
    for n, r in enumerate([1.0, 3.0, 5.0, 7.0, 4.0], start=1):
        q = incremental_mean(q, n, r)
        means.append(q)
    assert means == pytest.approx([1.0, 2.0, 3.0, 4.0, 4.0])
    rng = np.random.default_rng(0)
    assert choose("ucb", np.array([5.0, 0.0, 1.0]), np.array([3, 0, 1]), 5, rng, 0.0, 2.0) == 1  # untried first
    # t=10: arm 0: 1 + 2*sqrt(ln10/9) = 2.01; arm 1: 1.5 + 2*sqrt(ln10/100) = 1.80 -> arm 0 (greedy takes 1)
    q, n = np.array([1.0, 1.5]), np.array([9, 100])
    assert choose("ucb", q, n, 10, rng, 0.0, 2.0) == 0 and choose("greedy", q, n, 10, rng, 0.0, 2.0) == 1


def test_bandit_env_fixed_problem():
    a = gym.make("dlrun/Bandit-v0", k=5, steps=10, means_seed=0)
    _, i1 = a.reset(seed=1)
    _, i2 = a.reset(seed=2)
    assert i1["best_arm"] == i2["best_arm"] and i1["optimal_return"] == pytest.approx(10 * i1["best_mean"])
    r1 = [a.step(i1["best_arm"])[1] for _ in range(3)]
    _, i3 = gym.make("dlrun/Bandit-v0", k=5, steps=10).reset(seed=1)
    assert i3["best_mean"] != i1["best_mean"] and len(set(r1)) == 3


# -- end to end: short real runs of the presets --------------------------------------------------
def test_cli_reinforce_smoke(run_dlrun, runs, mlflow_client):
    run_dlrun("train", "experiment=cartpole_reinforce", "env.num_envs=2", "agent.episodes_per_update=2",
              "task.total_steps=400", "task.eval.episodes=3", "task.eval.during=1", "task.eval.every_steps=200")
    run = runs()[0]
    assert {"test/mean_return", "train/policy_loss", "train/value_loss", "val/mean_return"} <= set(run.data.metrics)
    # the logged policy, reloaded by dlrun eval, plays the test episodes exactly as the trained one did
    run_dlrun("eval", f"run_id={run.info.run_id}")
    history = [h.value for h in mlflow_client.get_metric_history(run.info.run_id, "test/mean_return")]
    assert len(history) == 2 and history[0] == history[1]


def test_mc_control_learns_the_gridworld_path_to_the_goal():
    from omegaconf import OmegaConf

    from dlrun.rl.envs import value_iteration
    from dlrun.rl.learn import learn
    from dlrun.rl.mc_control import MCControl
    from dlrun.rl.nets import q_table

    cfg = OmegaConf.create({"name": "mc_control", "alpha": 0.05, "gamma": 0.9, "visits": "every",
                            "exploration": "epsilon", "epsilon_start": 1.0, "epsilon_end": 0.1,
                            "epsilon_decay_fraction": 0.5, "ucb_c": 1.0})
    env = gym.make("dlrun/GridWorld-v0")
    agent = MCControl(q_table(20, 4), 20, 4, cfg)
    learn(agent, UnitRun(), lambda: gym.make("dlrun/GridWorld-v0"), 0, 30_000, 10_000, lambda: 0.0)
    served = agent.model.get_layer("q_table").get_weights()[0]
    assert np.array_equal(served, agent.q.astype(np.float32))
    _, best, _ = value_iteration(env, 0.9)
    s, _ = env.reset(seed=0)
    for _ in range(10):  # the learned greedy path from the start is value iteration's
        a = int(agent.q[s].argmax())
        assert a == best[s], f"cell {divmod(s, 5)}"
        s, r, term, *_ = env.step(a)
        if term:
            break
    assert term and r == 1.0


def test_cli_bandit_smoke(run_dlrun, runs):
    run_dlrun("train", "experiment=bandit", "agent.runs=5", "env.kwargs.steps=100", "task.eval.episodes=2")
    m = runs()[0].data.metrics
    for method in ("greedy", "epsilon", "ucb"):
        assert f"bandit/{method}/optimal_action_pct" in m and f"train/{method}/avg_reward" in m
    for method in ("epsilon", "ucb"):  # exploring methods find the best of 5 arms more often than chance (20 %)
        assert m[f"bandit/{method}/optimal_action_pct"] > 100 / 5, method
    assert m["baseline/optimal/mean_return"] == pytest.approx(100 * np.random.default_rng(0).normal(0, 1, 5).max())
    assert "test/optimal_ratio" in m and "baseline/random/mean_return" in m


def test_ddpg_soft_update_on_tiny_weights_and_action_errors(compose):
    import tensorflow as tf

    from dlrun.errors import DlrunError
    from dlrun.rl.ddpg import soft_update
    from dlrun.tasks.rl import RLTask

    target, source = [tf.Variable([0.0, 10.0]), tf.Variable(4.0)], [tf.Variable([1.0, 0.0]), tf.Variable(-4.0)]
    soft_update(target, source, 0.1)  # 0.9 t + 0.1 s
    assert target[0].numpy() == pytest.approx([0.1, 9.0]) and float(target[1]) == pytest.approx(3.2)
    soft_update(target, source, 1.0)  # tau 1: a hard copy
    assert target[0].numpy() == pytest.approx([1.0, 0.0]) and float(target[1]) == -4.0
    with pytest.raises(DlrunError, match="agent=ddpg needs continuous actions"):
        RLTask().data(compose("task=rl", "agent=ddpg"), 1)
    with pytest.raises(DlrunError, match="needs discrete actions"):
        RLTask().data(compose("task=rl", "agent=reinforce", "env=pendulum"), 1)
    info = RLTask().data(compose("task=rl", "agent=ddpg", "env=pendulum"), 1).info
    assert info.continuous and info.action_bound == 2.0


def test_ddpg_trains_in_process_and_its_targets_trail_the_online_nets():
    from dlrun.rl.ddpg import DDPG
    from dlrun.rl.learn import learn
    from dlrun.rl.nets import ddpg_actor

    cfg = tiny_ddpg_cfg(noise="ou")
    env = gym.make("Pendulum-v1")
    actor = ddpg_actor(3, 1, [8], bound=2.0)
    before = [w.copy() for w in actor.get_weights()]
    agent = DDPG(actor, env.observation_space, env.action_space, cfg)
    fit = learn(agent, UnitRun(), lambda: gym.make("Pendulum-v1"), 0, 300, 300, lambda: 0.0)
    assert fit.seen == 300 and fit.steps[-1] == 300 and np.isfinite(fit.history["critic_loss"][-1])
    after, target = actor.get_weights(), agent.actor_t.get_weights()
    assert not np.allclose(before[0], after[0])  # the actor learned
    assert not np.allclose(target[0], after[0]) and not np.allclose(target[0], before[0])  # soft, not copied
    out = actor(np.zeros((2, 3), np.float32))["mean"].numpy()
    assert out.shape == (2, 1) and np.all(np.abs(out) <= 2.0)
