"""The RL task's data: a gymnasium environment (id + keyword arguments from `env.*`), handed to
the agent as a factory. Registered so that `data=gym` composes like every other source."""

from __future__ import annotations

from dlrun.registry import DATA


@DATA.register("gym", "A gymnasium environment (env.id, env.kwargs): the RL task's data", tags=("rl",))
def gym_env(data_cfg):
    from dlrun.rl.rollout import env_factory

    return env_factory(data_cfg)
