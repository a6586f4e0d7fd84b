"""Reinforcement learning for dlrun: gymnasium environments (dlrun/Orso-v1, GridWorld, SuttonGrid,
Bandit) with exact baselines, and agents (PPO, tabular Q-learning). Importing this package
registers the environments with gymnasium."""

from dlrun.rl.envs import register_envs

register_envs()
