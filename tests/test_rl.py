"""RL task: dlrun's gymnasium environments, their exact baselines, the agents and a smoke run."""

from __future__ import annotations

import itertools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import stderr_line

import dlrun.rl  # noqa: F401  (registers the environments)
from dlrun.errors import DlrunError
from dlrun.rl.envs import EDGES, optimal_cost, optimal_return, policy_evaluation, value_iteration
from dlrun.rl.envs import make as make_env


def _orso(**kw):
    env = gym.make("dlrun/Orso-v1", **kw)
    env.reset(seed=0)
    return env


def test_orso_observation_reward_invalid_and_truncation():
    env = gym.make("dlrun/Orso-v1")
    obs, info = env.reset(seed=0)
    u = env.unwrapped
    u.honey[:] = 0.0
    u.honey[2] = 1000.0  # a pot on B
    u.honey[5] = 1000.0
    obs = u._obs()
    assert obs.shape == (19,) and obs[0] == 0
    assert list(obs[1:5]) == [-300.0, 900.0, -200.0, -1000.0]  # S's edges A 300, B 100, C 200, none
    obs, r, term, trunc, _ = env.step(1)  # S -> B with a pot
    assert r == pytest.approx(0.15) and obs[0] == 2 and obs[5 + 2] == 0.0 and not term
    env.step(0)  # back to S: -100/6000, one pot is still on E
    _, r, term, _, _ = env.step(3)  # S has three edges: invalid, stays
    assert r == pytest.approx(-1 / 6) and u.node == 0 and not term
    steps = 3
    trunc = False
    while not trunc:
        _, _, term, trunc, _ = env.step(3)
        steps += 1
        assert not term
    assert steps == 25


def test_orso_terminates_only_at_the_cave_with_every_pot():
    env = gym.make("dlrun/Orso-v1")
    env.reset(seed=1)
    u = env.unwrapped
    u.honey[:] = 0.0
    u.honey[2] = 1000.0
    u.total = 1000.0
    _, r, term, _, _ = env.step(1)  # S -> B collects the last pot, but B is not the cave
    assert not term and r == pytest.approx(0.9)
    _, r, term, _, _ = env.step(0)  # B -> S
    assert term and r == pytest.approx(-0.1)


def test_orso_options():
    obs, _ = _orso(partial_obs=True).reset(seed=0)
    assert obs.shape == (9,)
    env = _orso(noop_action=True, invalid_penalty=500)
    assert env.action_space.n == 5
    _, r, *_ = env.step(4)
    assert r == 0.0
    _, r, *_ = env.step(3)
    assert r == pytest.approx(-500 / 6000)


def test_orso_pots_are_seeded():
    a = gym.make("dlrun/Orso-v1").reset(seed=7)[1]["pots"]
    b = gym.make("dlrun/Orso-v1").reset(seed=7)[1]["pots"]
    assert a == b and len(a) == 6 and 0 not in a


def test_orso_solver_on_a_hand_computed_tour_and_over_all_placements():
    # pots on B, C, L, M, N, O: S-B 100, B-C 50, C-M 100, M-L 50, L-M 50, M-N 100, N-O 100, then
    # back O-N 100, N-M 100, M-C 100, C-B 50, B-S 100: 1000 in all (C-L 200 directly is dearer).
    pots = [2, 3, 10, 11, 12, 13]
    assert optimal_cost(pots) == 1000.0
    assert optimal_return(pots) == pytest.approx(5000 / 6000)
    r = [optimal_return(p) for p in itertools.combinations(range(1, 14), 6)]
    assert len(r) == 1716
    assert np.mean(r) == pytest.approx(0.7389, abs=1e-3)
    assert min(r) == pytest.approx(2 / 3) and max(r) == pytest.approx(0.8583, abs=1e-3)


def test_orso_solver_walk_is_achievable_in_the_env():
    """Following shortest paths in the solver's best order gives exactly the optimal return."""
    from dlrun.rl.envs import _orders, shortest_paths

    d = shortest_paths()
    for seed in range(5):
        env = gym.make("dlrun/Orso-v1")
        _, info = env.reset(seed=seed)
        pots = info["pots"]
        orders = np.asarray(pots)[_orders()]
        costs = [d[0, o[0]] + sum(d[o[i], o[i + 1]] for i in range(5)) + d[o[-1], 0] for o in orders]
        route = [0, *orders[int(np.argmin(costs))], 0]
        total = 0.0
        for b in route[1:]:
            while env.unwrapped.node != b:  # greedy along the shortest path
                here = env.unwrapped.node
                act = min(range(len(EDGES[here])), key=lambda i: EDGES[here][i][1] + d[EDGES[here][i][0], b])
                _, r, term, trunc, _ = env.step(act)
                total += r
        assert term and total == pytest.approx(info["optimal_return"])


def test_gridworld_value_iteration_and_sutton_policy_evaluation():
    v, policy, _ = value_iteration(gym.make("dlrun/GridWorld-v0"), gamma=0.9)
    v = v.reshape(4, 5)
    assert v[0, 3] == pytest.approx(1.0) and v[0, 2] == pytest.approx(-0.1 + 0.9)
    assert v[2, 0] == pytest.approx(0.181, abs=1e-3)
    assert policy.reshape(4, 5)[2, 0] == 0  # start: go up
    env = gym.make("dlrun/SuttonGrid-v0")
    rand = np.full((16, 4), 0.25)
    v1, v2, v3 = (policy_evaluation(env, rand, 1.0, k).reshape(4, 4) for k in (1, 2, 3))
    assert v1[0, 1] == -1 and v2[0, 1] == -1.75 and v2[0, 2] == -2
    assert v3[0, 1] == pytest.approx(-2.4375) and v3[0, 2] == pytest.approx(-2.9375)
    assert v3[0, 3] == pytest.approx(-3) and v3[1, 1] == pytest.approx(-2.875)


def test_bandit_and_unknown_id():
    env = gym.make("dlrun/Bandit-v0", k=3, steps=4)
    _, info = env.reset(seed=0)
    assert env.action_space.n == 3 and "best_mean" in info
    with pytest.raises(DlrunError, match="CartPole-v1"):
        make_env("CartPole-v2")


# -- agents: the pieces against hand computations ----------------------------------------------
def test_gae_against_a_hand_computed_example():
    from dlrun.rl.ppo import gae

    r = np.array([[1.0], [1.0], [1.0]])
    v = np.array([[0.5], [0.5], [0.5]])
    d = np.array([[0.0], [1.0], [0.0]])  # the episode ends after step 1
    adv, ret = gae(r, v, d, np.array([2.0]), gamma=0.9, lam=0.5)
    # t=2: 1 + 0.9*2 - 0.5 = 2.3; t=1 (terminal): 1 - 0.5 = 0.5; t=0: (1 + 0.45 - 0.5) + 0.45*0.5 = 1.175
    assert adv[:, 0] == pytest.approx([1.175, 0.5, 2.3])
    assert ret[:, 0] == pytest.approx([1.675, 1.0, 2.8])


def test_clipped_surrogate_on_a_tiny_batch():
    import tensorflow as tf

    from dlrun.rl.ppo import clipped_loss

    logp_old = tf.zeros(2)
    logp = tf.math.log(tf.constant([1.5, 0.5]))  # ratios 1.5 and 0.5
    loss, frac = clipped_loss(logp, logp_old, tf.constant([1.0, -1.0]), 0.2)
    # min(1.5*1, 1.2*1) = 1.2; min(0.5*-1, 0.8*-1) = -0.8 -> loss = -(1.2 - 0.8)/2
    assert float(loss) == pytest.approx(-0.2) and float(frac) == 1.0


def _ppo(**overrides):
    from omegaconf import OmegaConf

    from dlrun.rl.nets import actor_critic
    from dlrun.rl.ppo import PPO

    cfg = OmegaConf.merge(OmegaConf.load(Path(__file__).parent.parent / "configs/agent/ppo.yaml"), overrides)
    model = actor_critic(4, 2, False, [16, 16])
    env = gym.make("CartPole-v1")
    return PPO(model, env.observation_space, env.action_space, cfg), model


def _batch(model, n=64, seed=0):
    """A batch whose old log-probabilities are the model's own (KL starts at 0)."""
    import tensorflow as tf

    from dlrun.rl.nets import log_prob_entropy

    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, 4)).astype(np.float32)
    act = rng.integers(0, 2, n).astype(np.float32)
    logp, _ = log_prob_entropy(model(obs), tf.constant(act), False)
    adv = rng.standard_normal(n).astype(np.float32)
    return [tf.constant(x) for x in (obs, act, logp.numpy(), adv, adv, np.zeros(n, np.float32))]


def test_ppo_kl_early_stop_and_penalty_term():
    from dlrun.rl.ppo import adapt_kl_coef

    agent, model = _ppo(epochs=10, learning_rate=0.01, jit_compile=False)
    assert agent._update(*_batch(model))[-1] == 10  # no target: every epoch runs
    agent, model = _ppo(epochs=10, learning_rate=0.01, target_kl=1e-6, jit_compile=False)
    assert agent._update(*_batch(model))[-1] == 1  # the 2nd epoch's KL is above 1.5 x target: stop
    # KL penalty without clipping: the loss is pg + beta * KL + vf_coef * value loss (ent_coef 0)
    agent, model = _ppo(clip=None, kl_coef=2.0, epochs=5, learning_rate=0.01, jit_compile=False)
    loss, pg, vloss, _, kl, frac, _ = agent._update(*_batch(model)).numpy()
    assert kl > 0 and frac == 0 and loss == pytest.approx(pg + 2.0 * kl + 0.5 * vloss, rel=1e-4)
    assert adapt_kl_coef(1.0, 0.1, 0.01) == 2.0 and adapt_kl_coef(1.0, 0.001, 0.01) == 0.5
    assert adapt_kl_coef(1.0, 0.01, 0.01) == 1.0


def test_ppo_xla_update_equals_the_plain_one():
    import tensorflow as tf

    weights = {}
    for jit in (False, True):
        tf.random.set_seed(0)
        agent, model = _ppo(jit_compile=jit, epochs=3)
        model.set_weights([np.full_like(w, 0.05 * (i + 1)) for i, w in enumerate(model.get_weights())])
        agent._update(*_batch(model))
        weights[jit] = model.get_weights()
    assert max(float(np.abs(a - b).max()) for a, b in zip(weights[False], weights[True], strict=True)) < 1e-5


@pytest.mark.parametrize("continuous,shared,norm", [(False, False, False), (True, False, True), (False, True, True)])
def test_numpy_collection_policy_equals_the_keras_model(continuous, shared, norm):
    import tensorflow as tf

    from dlrun.rl.nets import actor_critic, log_prob_entropy
    from dlrun.rl.ppo import NumpyPolicy
    from dlrun.rl.rollout import obs_normalizer

    model = actor_critic(4, 2, continuous, [32, 32], obs_scale=2.0, shared=shared, normalize_obs=norm)
    obs_normalizer(model).update(np.random.default_rng(2).normal(3.0, 5.0, (50, 4)))  # non-trivial statistics
    policy = NumpyPolicy(model, continuous, seed=0)
    obs = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    keras_out = model(obs)
    for k, v in policy.outputs(obs).items():
        assert np.allclose(v, keras_out[k].numpy(), atol=1e-5), k
    a, logp, v = policy.act(obs)
    keras_logp, _ = log_prob_entropy(keras_out, tf.constant(np.asarray(a, np.float32)), continuous)
    assert np.allclose(logp, keras_logp.numpy(), atol=1e-5) and np.allclose(v, policy.value(obs))
    model.layers[-1].set_weights([w + 1.0 for w in model.layers[-1].get_weights()])
    policy.sync()  # after an update the copy follows the model
    assert np.allclose(policy.outputs(obs)["value"], model(obs)["value"].numpy(), atol=1e-5)


def test_dqn_targets_with_and_without_double():
    import tensorflow as tf

    from dlrun.rl.dqn import td_targets

    online = tf.constant([[1.0, 3.0]])
    target = tf.constant([[2.0, 0.5]])
    r, d = tf.constant([1.0]), tf.constant([0.0])
    assert float(td_targets(online, target, r, d, 0.5, double=False)[0]) == pytest.approx(1 + 0.5 * 2.0)
    assert float(td_targets(online, target, r, d, 0.5, double=True)[0]) == pytest.approx(1 + 0.5 * 0.5)
    assert float(td_targets(online, target, r, tf.constant([1.0]), 0.5, double=True)[0]) == 1.0


def test_replay_buffer_wraps_and_samples_stored_transitions():
    from dlrun.rl.dqn import Replay

    buf = Replay(4, 1, seed=0)
    for k in range(6):
        buf.add(np.array([[k]]), [k % 2], [float(k)], np.array([[k + 1]]), [0.0])
    assert buf.n == 4 and sorted(buf.obs[:, 0]) == [2, 3, 4, 5]
    obs, act, rew, nxt, _ = buf.sample(16)
    assert set(obs[:, 0]) <= {2, 3, 4, 5} and np.all(rew == obs[:, 0]) and np.all(nxt[:, 0] == obs[:, 0] + 1)


def test_tabular_targets_and_policy_iteration_is_optimal():
    from dlrun.rl.tabular import policy_iteration, td_target

    q_next = np.array([1.0, 4.0])
    assert td_target(1.0, q_next, None, 0.5, False) == 3.0  # Q-learning: max
    assert td_target(1.0, q_next, 0, 0.5, False) == 1.5  # SARSA: the action taken
    assert td_target(1.0, q_next, None, 0.5, True) == 1.0
    env = gym.make("dlrun/SuttonGrid-v0")
    v, q, _ = policy_iteration(env, 1.0)
    assert v.reshape(4, 4)[0] == pytest.approx([0, -1, -2, -3])
    assert v.reshape(4, 4)[3, 0] == pytest.approx(-3)


# -- end to end: one real dlrun train run ----------------------------------------------------
def test_cli_train_ppo_smoke_logs_the_policy_and_reloads_it(run_dlrun, runs, mlflow_client, workdir):
    run_dlrun("train", "task=rl", "env.num_envs=2", "agent.n_steps=64", "task.total_steps=256",
              "task.eval.episodes=3", "task.eval.during=1", "task.eval.every_steps=256", "agent.kl_coef=0.2")
    run = runs()[0]
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert {"test/mean_return", "baseline/random/mean_return", "train/kl", "val/mean_return", "train/kl_coef",
            "train/seconds", "train/epochs_run"} <= set(m)
    # the logged served model answers an observation row with an action, as the agent does
    from dlrun.serving import load

    folder = mlflow_client.download_artifacts(run.info.run_id, "served", str(workdir / "dl"))
    served = load(__import__("pathlib").Path(folder))
    obs = np.array([[0.01, 0.2, -0.03, -0.3], [0.0, -0.5, 0.1, 0.8]], np.float32)
    out = served.model(obs)
    probs = np.asarray(out["probabilities"])
    assert np.array_equal(np.asarray(out["action"]), probs.argmax(axis=1)) and probs.sum(axis=1) == pytest.approx(1)
    # dlrun eval re-runs the greedy episodes and records two of them as MP4 (gymnasium RecordVideo)
    out = run_dlrun("eval", f"run_id={run.info.run_id}", "task.eval.video=2").stdout
    # the reloaded policy plays the same test episodes exactly as the trained one did
    history = mlflow_client.get_metric_history(run.info.run_id, "test/mean_return")
    assert len(history) == 2 and history[0].value == history[1].value
    videos = sorted((workdir / "videos").glob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 1000 for v in videos) and "wrote" in out
    logged = [a.path for a in mlflow_client.list_artifacts(run.info.run_id, "test/videos")]
    assert sorted(Path(a).name for a in logged) == [v.name for v in videos]
    assert mlflow_client.get_run(run.info.run_id).info.status == "FINISHED"


def test_the_same_seed_gives_the_same_ppo_return_curve(run_dlrun, runs, mlflow_client):
    args = ("train", "task=rl", "env.num_envs=4", "agent.n_steps=64", "task.total_steps=3072", "task.eval.episodes=2",
            "task.eval.during=2", "task.eval.every_steps=1024", "tracking.log_model=false", "trainer.seed=7")
    run_dlrun(*args)
    run_dlrun(*args)
    curves = [{k: [(m.step, m.value) for m in mlflow_client.get_metric_history(r.info.run_id, k)]
               for k in ("train/episode_return", "train/loss", "val/mean_return")} for r in runs()]
    assert len(curves) == 2 and len(curves[0]["train/loss"]) == 12
    assert curves[0] == curves[1]
    # 3,072 steps already lift the greedy policy above a random one on the same test episodes
    m = runs()[0].data.metrics
    assert m["test/mean_return"] > m["baseline/random/mean_return"]


def test_video_of_an_env_without_rendering_is_one_line(run_dlrun):
    proc = run_dlrun("train", "task=rl", "env=gridworld", "agent=q_learning", "task.total_steps=200",
                     "task.eval.episodes=2", "task.eval.video=1", "tracking=off", expect=2)
    assert "cannot render frames" in stderr_line(proc)


def test_unknown_agent_and_env_are_one_line_errors(compose):
    from dlrun.tasks.rl import RLTask

    with pytest.raises(DlrunError, match="did you mean.*CartPole-v1"):
        RLTask().data(compose("task=rl", "env.id=CartPol-v1"), 1)
    with pytest.raises(DlrunError, match="unknown agent"):
        RLTask().data(compose("task=rl", "agent.name=a2c"), 1)
    with pytest.raises(DlrunError, match="discrete state space"):
        RLTask().data(compose("task=rl", "agent=q_learning"), 1)
