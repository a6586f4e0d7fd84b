"""The RL task's networks (task=rl): built from the environment's spaces and the agent's config,
which `RLInfo` (dlrun/tasks/rl.py) carries. The layers live in dlrun/rl/nets.py."""

from __future__ import annotations

from dlrun.registry import MODELS


@MODELS.register("policy", "RL agent networks: PPO/REINFORCE actor-critic, DDPG actor, DQN Q-network, tabular Q table", tags=("rl",))
def build_policy(model_cfg, info):
    from dlrun.rl import nets

    agent = info.agent
    hidden = list(agent.get("hidden", [64, 64]))
    if agent["name"] in ("ppo", "reinforce"):  # REINFORCE: the value head is its baseline
        return nets.actor_critic(info.input_shape[0], info.action_dim, info.continuous, hidden,
                                 agent.get("activation", "tanh"), info.obs_scale, bool(agent.get("shared", False)),
                                 normalize_obs=info.normalize_obs)
    if agent["name"] == "dqn":
        return nets.q_network(info.input_shape[0], info.action_dim, hidden, agent.get("activation", "relu"),
                              info.obs_scale, normalize_obs=info.normalize_obs)
    if agent["name"] == "ddpg":
        return nets.ddpg_actor(info.input_shape[0], info.action_dim, hidden, agent.get("activation", "relu"),
                               info.obs_scale, info.action_bound, normalize_obs=info.normalize_obs)
    return nets.q_table(info.n_states, info.action_dim)
