"""Reinforcement learning task (task=rl): an agent (agent=ppo | dqn | ddpg | reinforce | q_learning |
sarsa | mc_control | bandit | value_iteration | policy_iteration) learns on a gymnasium environment (env=cartpole | orso |
gridworld | ..., or any id through env.id=...).

Data is an environment factory; fit is the agent's own loop (progress and metrics in
environment steps, periodic greedy evaluation kept as the best model); the served model is the
greedy policy (observation row in, action and probabilities or Q-values out). The report runs
it on `task.eval.episodes` fixed seeds next to a random policy on the same seeds and, where an
exact answer exists (dlrun/Orso-v1's solver, value iteration on envs with a known model), the
optimum and the ratio agent/optimum.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from dlrun.contract import Data, DataInfo, Examples, Objective, Report, Served
from dlrun.errors import DlrunError
from dlrun.registry import AGENTS, DATA, TASKS
from dlrun.tasks.base import Task


@dataclass(frozen=True)
class AgentSpec:
    """Where an agent's class lives (imported only when one is built: `dlrun list` stays light)
    and how it is built. The constructor shapes: "deep" agents take the spaces and the env config
    (they collect from `env.num_envs` envs); "tabular" ones take the state and action counts;
    "bandit" the arm count; "dp" plans on the model of the environment. All of them then run in
    one loop (dlrun/rl/learn.py)."""

    path: str  # module:Class
    shape: str  # deep | tabular | bandit | dp


for _name, _path, _shape, _about in (
    ("ppo", "dlrun.rl.ppo:PPO", "deep", "PPO: clipped surrogate + GAE, vectorised envs"),
    ("dqn", "dlrun.rl.dqn:DQN", "deep", "DQN with a target network and Double DQN, replay"),
    ("ddpg", "dlrun.rl.ddpg:DDPG", "deep", "DDPG: deterministic actor + critic, continuous actions"),
    ("reinforce", "dlrun.rl.reinforce:Reinforce", "deep", "REINFORCE (Monte Carlo policy gradient), value baseline"),
    ("q_learning", "dlrun.rl.tabular:TabularQ", "tabular", "Tabular Q-learning (off-policy TD), discrete states"),
    ("sarsa", "dlrun.rl.tabular:TabularQ", "tabular", "Tabular SARSA (on-policy TD), discrete states"),
    ("mc_control", "dlrun.rl.mc_control:MCControl", "tabular", "Tabular Monte Carlo control, constant alpha"),
    ("bandit", "dlrun.rl.bandit:BanditAgent", "bandit", "k-armed bandit: greedy, epsilon-greedy, UCB"),
    ("value_iteration", "dlrun.rl.tabular:DynamicProgramming", "dp", "Value iteration on an env's known model"),
    ("policy_iteration", "dlrun.rl.tabular:DynamicProgramming", "dp", "Policy iteration on an env's known model"),
):
    AGENTS.register(_name, _about, tags=(_shape,))(AgentSpec(_path, _shape))


def tabular_agent(name: str) -> bool:
    """Agents that keep a table per state (they need discrete observations)."""
    return AGENTS.get(name).shape in ("tabular", "bandit", "dp")


def make_agent(cfg, model, info, factory):
    """The agent named by cfg.agent.name, built as its registry entry says."""
    import importlib

    spec = AGENTS.get(cfg.agent.name)
    shape = spec.shape
    module, cls = spec.path.split(":")
    agent_cls = getattr(importlib.import_module(module), cls)
    if shape == "deep":
        env = factory()
        return agent_cls(model, env.observation_space, env.action_space, cfg.agent, cfg.env)
    if shape == "tabular":
        return agent_cls(model, info.n_states, info.action_dim, cfg.agent)
    if shape == "bandit":
        return agent_cls(model, info.action_dim, cfg.agent)
    return agent_cls(model, cfg.agent)


# Trainer options of a Keras fit that an RL run has no use for -> what sets that thing here. Set
# to anything but their defaults, they are a one-line error (RLTask.check), not ignored.
NOT_FOR_RL = {
    "epochs": "use task.total_steps, in environment steps",
    "batch_size": "use the agent's own keys: agent.n_steps and agent.minibatches, or agent.batch_size",
    "optimizer": "the agents train with Adam; set agent.learning_rate",
    "learning_rate": "use agent.learning_rate: agent.actor_lr / agent.critic_lr for DDPG, agent.alpha for tabular agents",
    "momentum": "the agents train with Adam; set agent.learning_rate",
    "weight_decay": "the agents train with Adam; set agent.learning_rate",
    "beta_1": "the agents train with Adam; set agent.learning_rate",
    "clipnorm": "use agent.max_grad_norm",
    "loop": "RL agents train in the RL loop, dlrun/rl/learn.py",
    "jit_compile": "use agent.jit_compile, PPO's compiled update",
    "steps_per_execution": "each agent update is one compiled call already",
    "limit_batches": "use task.total_steps",
    "fast_examples": "trainer.fast uses task.smoke's budget",
    "backup_interval_s": "an RL run keeps no backup: trainer.resume is refused for it",
    "lr_schedule.name": "use agent.anneal_lr, PPO's linear annealing",
}
SMOKE_SET = ("epochs", "limit_batches")  # trainer=smoke sets these for Keras tasks; not the user's doing


@dataclass
class RLInfo(DataInfo):
    """DataInfo plus what the agent's networks need from the env's spaces."""

    agent: dict = field(default_factory=dict)
    action_dim: int = 1  # actions (discrete) or action components (continuous)
    continuous: bool = False
    obs_scale: float = 1.0
    normalize_obs: bool = False  # env.normalize_obs: a running ObsNorm layer inside the network
    action_bound: float = 1.0  # continuous: the largest |action| (DDPG's tanh scale)
    n_states: int = 0  # discrete observation spaces (tabular agents)
    env_id: str = ""


def budget(cfg) -> SimpleNamespace:
    """Steps, evaluation cadence and episode seeds of a run: task.total_steps and task.eval, cut
    to task.smoke's under trainer.fast (trainer=smoke). Test seeds are eval.seed, seed+1, ...;
    validation seeds eval.val_seed, val_seed+1, ... (RLTask.check keeps them apart)."""
    t, e = cfg.task, cfg.task.eval
    total, episodes, during = int(t.total_steps), int(e.episodes), int(e.during)
    if cfg.trainer.fast:
        total, episodes, during = (min(v, int(t.smoke[k])) for v, k in
                                   ((total, "total_steps"), (episodes, "episodes"), (during, "episodes")))
    return SimpleNamespace(total_steps=total, every_steps=min(int(e.every_steps), max(total, 1)),
                           test_seeds=[int(e.seed) + i for i in range(episodes)],
                           val_seeds=[int(e.val_seed) + i for i in range(during)])


def greedy(model):
    """rows -> greedy actions of an agent model or a served policy (one batched call per step)."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def act(rows):
        out = {k: v.numpy() for k, v in fn(tf.constant(rows)).items()}
        if "action" in out:
            return out["action"]
        if "mean" in out:
            return out["mean"]
        return np.argmax(out["logits"] if "logits" in out else out["q_values"], axis=-1)

    return act


@TASKS.register("rl", "Reinforcement learning on gymnasium envs: PPO, DQN, DDPG, REINFORCE, tabular, bandits, DP")
class RLTask(Task):
    name = "rl"

    def data(self, cfg, batch_size: int) -> Data:
        import gymnasium as gym

        import dlrun.rl  # noqa: F401  (registers dlrun's envs)

        agent = AGENTS.canonical(cfg.agent.name)  # an unknown name: one line with the nearest ones
        factory = DATA.for_task(cfg.data.name, "rl").obj(cfg.env)
        env = factory()
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
        if video_count(cfg) > 0 and "rgb_array" not in env.metadata.get("render_modes", []):
            raise DlrunError(f"{cfg.env.id} cannot render frames (no rgb_array render mode), so there is no video",
                             "task.eval.video needs an env that renders, e.g. CartPole-v1, Pendulum-v1")
        continuous = isinstance(act_space, gym.spaces.Box)
        if continuous and agent not in ("ppo", "ddpg"):
            raise DlrunError(f"agent={agent} needs discrete actions; {cfg.env.id} has continuous ones",
                             "use agent=ppo or agent=ddpg")
        if agent == "ddpg" and not continuous:
            raise DlrunError(f"agent=ddpg needs continuous actions; {cfg.env.id} has discrete ones",
                             "use agent=dqn or agent=ppo, or env.id=Pendulum-v1")
        if tabular_agent(agent) and not isinstance(obs_space, gym.spaces.Discrete):
            raise DlrunError(f"agent={agent} needs a discrete state space; {cfg.env.id} has {obs_space}",
                             "use agent=ppo or agent=dqn, or env=gridworld / FrozenLake-v1 / Taxi-v3")
        norm = [k for k in ("normalize_obs", "normalize_reward") if cfg.env[k]]
        if tabular_agent(agent) and norm:
            raise DlrunError(f"env.{norm[0]}=true needs a network agent; agent={agent} is tabular",
                             f"drop env.{norm[0]} or use agent=dqn / ppo / reinforce")
        from dlrun.rl.rollout import obs_dim

        info = RLInfo(name=str(cfg.env.id), input_shape=(obs_dim(obs_space),), target="policy",
                      num_classes=None if continuous else int(act_space.n), source=f"gymnasium:{cfg.env.id}",
                      agent=dict(cfg.agent), action_dim=int(np.prod(act_space.shape)) if continuous else int(act_space.n),
                      continuous=continuous, action_bound=float(np.max(np.abs(act_space.high))) if continuous else 1.0,
                      obs_scale=float(cfg.env.obs_scale),
                      normalize_obs=bool(cfg.env.normalize_obs),
                      n_states=int(obs_space.n) if isinstance(obs_space, gym.spaces.Discrete) else 0,
                      env_id=str(cfg.env.id))
        # validation (during training, kept as the best) and test episodes: one env, own seeds
        return Data(info=info, train=factory, val=factory, test=factory)

    def objective(self, cfg, info: DataInfo | None = None) -> Objective:
        return Objective("mean_return", maximize=True)

    def build_model(self, cfg, info: DataInfo):
        from dlrun.models import build_model

        return build_model(cfg.model, info, task=self.name)

    def check(self, cfg, strategy) -> None:
        """What an RL run cannot honour, refused in one line before anything is trained: the
        trainer options of a Keras fit (NOT_FOR_RL), resuming, mixed precision, more than one
        replica, and validation seeds that overlap the test seeds."""
        import tensorflow as tf
        from omegaconf import OmegaConf

        from dlrun.config import TrainerConfig
        from dlrun.config_tree import config_dir

        # the defaults are the trainer group's YAML (typed by the schema), what a plain run gets
        t = cfg.trainer
        default = OmegaConf.merge(OmegaConf.structured(TrainerConfig), OmegaConf.load(config_dir() / "trainer/default.yaml"))
        for key, instead in NOT_FOR_RL.items():
            if t.smoke and key in SMOKE_SET:
                continue
            value, usual = OmegaConf.select(t, key), OmegaConf.select(default, key)
            if value != usual:
                raise DlrunError(f"trainer.{key}={value} has no meaning for task=rl", instead)
        if t.resume:
            raise DlrunError("trainer.resume: an RL run cannot be resumed; its agent's state (optimizer, replay "
                             "buffer, environments, normalisation statistics) is not backed up",
                             "start the run again without trainer.resume")
        if t.precision != "float32":
            raise DlrunError(f"trainer.precision={t.precision}: the RL agents train small float32 networks with "
                             "their own optimizers (no loss scaling); mixed precision does not apply",
                             "drop trainer.precision (float32)")
        if strategy is not tf.distribute.get_strategy():  # not the default one-device strategy
            raise DlrunError(f"strategy={cfg.strategy.name} ({type(strategy).__name__}, "
                             f"{strategy.num_replicas_in_sync} replica(s)): an RL agent updates one small network "
                             "on experience it collects step by step; there is no batch to split across replicas",
                             "use strategy=auto (one device), strategy=cpu or strategy=gpu")
        for key in ("total_steps", "eval.every_steps", "eval.episodes", "eval.during"):
            value = OmegaConf.select(cfg.task, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise DlrunError(f"task.{key} must be an integer >= 1, got {value!r}")
        e = cfg.task.eval
        test, val = range(int(e.seed), int(e.seed) + int(e.episodes)), range(int(e.val_seed), int(e.val_seed) + int(e.during))
        if set(test) & set(val):
            raise DlrunError(f"task.eval.val_seed={e.val_seed}: the validation episodes (seeds {val.start}.."
                             f"{val.stop - 1}) overlap the test episodes ({test.start}..{test.stop - 1})",
                             "choose a val_seed outside the test seeds")

    def fit(self, cfg, model, data: Data, run):
        import tensorflow as tf

        from dlrun.rl.learn import learn
        from dlrun.rl.rollout import run_episodes

        seed = int(cfg.trainer.seed)
        tf.random.set_seed(seed)
        np.random.seed(seed)
        b = budget(cfg)

        def evaluate():  # the greedy policy on the validation episodes
            return float(run_episodes(data.val, b.val_seeds, greedy(model))[0].mean())

        agent = make_agent(cfg, model, data.info, data.train)
        return learn(agent, run, data.train, seed, b.total_steps, b.every_steps, evaluate)

    def serving(self, cfg, model, data: Data) -> Served:
        from dlrun.rl.nets import served_policy
        from dlrun.rl.rollout import as_rows

        env = data.train()
        rows = as_rows([env.reset(seed=int(cfg.task.eval.seed) + i)[0] for i in range(3)], env.observation_space)
        info = data.info
        cols = {} if info.continuous else {"probabilities": [str(a) for a in range(info.action_dim)],
                                           "q_values": [str(a) for a in range(info.action_dim)]}
        return Served(served_policy(model), example=rows, output_columns=cols,
                      meta={"env_id": info.env_id, "agent": cfg.agent.name})

    def evaluate(self, cfg, served: Served, data: Data) -> Report:
        from dlrun.metrics import losing_to_baseline
        from dlrun.rl.rollout import random_actions, run_episodes

        factory, b = data.test, budget(cfg)
        seeds, act = b.test_seeds, greedy(served.model)
        ret, length, infos = run_episodes(factory, seeds, act)
        rnd = run_episodes(factory, seeds, random_actions(factory, int(cfg.trainer.seed)))[0]
        m = {"test/mean_return": float(ret.mean()), "test/std_return": float(ret.std()),
             "test/min_return": float(ret.min()), "test/max_return": float(ret.max()),
             "test/mean_length": float(length.mean()), "test/episodes": float(len(seeds)),
             "baseline/random/mean_return": float(rnd.mean()), "baseline/random/std_return": float(rnd.std())}
        report = Report(m, primary="test/mean_return")
        optimum = None
        if "optimal_return" in infos[0]:  # dlrun/Orso-v1: the exact solver, per episode
            optimum = np.array([i["optimal_return"] for i in infos])
        env = factory()
        if hasattr(env.unwrapped, "P") and optimum is None:  # a known model: value iteration
            from dlrun.rl.envs import value_iteration

            gamma = float(cfg.agent.get("gamma", 0.99))
            _, _, q = value_iteration(env, gamma)
            optimum = run_episodes(factory, seeds, lambda rows: q[rows[:, 0].astype(int)].argmax(axis=1))[0]
            states = [s for s in range(len(q)) if len(env.unwrapped.P[s][0]) > 1 or not env.unwrapped.P[s][0][0][3]]
            agent_a = np.asarray(act(np.array(states, np.float32)[:, None]))
            ok = [q[s, a] >= q[s].max() - 1e-9 for s, a in zip(states, agent_a, strict=True)]
            m["test/optimal_action_fraction"] = float(np.mean(ok))
        if optimum is not None:
            m["baseline/optimal/mean_return"] = float(optimum.mean())
            m["baseline/optimal/std_return"] = float(optimum.std())
            if abs(optimum.mean()) > 1e-12:
                m["test/optimal_ratio"] = float(ret.mean() / optimum.mean())
        report.tables["comparison"] = comparison_rows(cfg.agent.name, m)
        report.tables["episodes"] = [{"seed": s, "return": float(r), "length": int(n)}
                                     for s, r, n in zip(seeds[:20], ret, length, strict=False)]
        # never mislead: the greedy policy against a random one on the validation episodes
        val_agent = run_episodes(factory, b.val_seeds, act)[0].mean()
        val_random = run_episodes(factory, b.val_seeds, random_actions(factory, int(cfg.trainer.seed)))[0].mean()
        line = losing_to_baseline("mean_return", True, float(val_agent), {"random": float(val_random)},
                                  "a larger task.total_steps, or another agent")
        report.warnings += [line] if line else []
        if str(cfg.env.id).startswith("dlrun/Orso"):
            report.figures["orso_greedy_path.png"] = orso_path_figure(factory, seeds[0], act)
        videos = video_count(cfg)
        if videos > 0:
            folder = Path(str(cfg.task.eval.get("video_dir") or "videos")).resolve()
            files = record_videos(cfg.env, seeds[:videos], act, folder)
            report.files.update({f"videos/{f.name}": f for f in files})
        return report

    def read(self, cfg, source: str, served: Served | None = None) -> Examples:
        """A CSV of observation rows (one column per observation component, header optional)."""
        import pandas as pd

        try:
            frame = pd.read_csv(source)
        except (OSError, ValueError) as e:
            raise DlrunError(f"cannot read observations from {source}: {e}") from None
        try:
            rows = frame.to_numpy(np.float32)
        except ValueError:
            raise DlrunError(f"{source}: observation columns must be numbers") from None
        return Examples(rows, rows=frame, name=str(source), source=str(source))


def comparison_rows(agent: str, m: dict) -> list[dict]:
    """The console's comparison table: the greedy agent beside the random policy and, where it is
    known exactly, the optimum, on the same test episodes (ratio = return / optimum)."""
    optimum = m.get("baseline/optimal/mean_return")
    rows = [(f"{agent} (greedy)", "test"), ("random", "baseline/random"), ("optimum", "baseline/optimal")]
    out = []
    for name, key in rows:
        if f"{key}/mean_return" not in m:
            continue
        row = {"policy": name, "mean_return": m[f"{key}/mean_return"], "std_return": m[f"{key}/std_return"]}
        if optimum is not None and abs(optimum) > 1e-12:
            row["ratio_to_optimum"] = m[f"{key}/mean_return"] / optimum
        out.append(row)
    return out


def video_count(cfg) -> int:
    """task.eval.video: how many greedy test episodes to record (0: none)."""
    return int(cfg.task.eval.video or 0)


def play_episode(env, seed: int, act) -> tuple[float, dict]:
    """One episode of `act` (rows -> actions) from reset(seed): its return and the reset info."""
    from dlrun.rl.rollout import as_rows

    obs, info = env.reset(seed=int(seed))
    total, done = 0.0, False
    while not done:
        obs, r, term, trunc, _ = env.step(act(as_rows([obs], env.observation_space))[0])
        total += r
        done = term or trunc
    return total, info


def record_videos(env_cfg, seeds, act, folder: Path) -> list[Path]:
    """MP4s of greedy episodes (one per seed) through gymnasium's RecordVideo wrapper."""
    import gymnasium as gym
    from gymnasium.error import DependencyNotInstalled

    from dlrun.rl.envs import make

    env = make(str(env_cfg.id), render_mode="rgb_array", **dict(env_cfg.get("kwargs") or {}))
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        env = gym.wrappers.RecordVideo(env, str(folder), episode_trigger=lambda _: True, name_prefix=f"greedy-{stamp}",
                                       disable_logger=True)
        for seed in seeds:
            play_episode(env, seed, act)
        env.close()
    except DependencyNotInstalled as e:
        raise DlrunError(f"video recording: {str(e).splitlines()[0]}", "pip install 'dlrun[video]'") from None
    return sorted(folder.glob(f"greedy-{stamp}-episode-*.mp4"))


def orso_path_figure(factory, seed: int, act):
    """The bear's greedy path on the graph (edges coloured by cost, pots as gold circles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlrun.rl.envs import EDGES, NODES

    pos = {"S": (0, 0), "A": (-2, 2), "B": (0, 1.5), "C": (2, 1), "D": (-3.5, 3), "E": (-2, 3.5), "F": (-3, 4.5),
           "G": (-1, 6), "H": (0, 4), "K": (1, 3), "L": (3.5, 2.5), "M": (2.5, 3), "N": (2.5, 4.5), "O": (1.5, 6)}
    env = factory()
    total, info = play_episode(env, seed, act)  # Orso.step casts the action to int
    pots = list(info["pots"])
    path = env.unwrapped.path
    fig, ax = plt.subplots(figsize=(6, 6))
    cmap = plt.get_cmap("viridis")
    for i, edges in enumerate(EDGES):
        for j, c in edges:
            (x0, y0), (x1, y1) = pos[NODES[i]], pos[NODES[j]]
            ax.plot([x0, x1], [y0, y1], color=cmap(c / 300), lw=1.5, zorder=1)
    for a, b in zip(path, path[1:], strict=False):
        (x0, y0), (x1, y1) = pos[NODES[a]], pos[NODES[b]]
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "red", "lw": 2})
    for k, name in enumerate(NODES):
        x, y = pos[name]
        ax.scatter([x], [y], s=500, color="gold" if k in pots else "lightgrey", edgecolor="k", zorder=2)
        ax.text(x, y, name, ha="center", va="center", zorder=3)
    ax.set_title(f"greedy episode (seed {seed}): return {total:.3f}, optimum {info['optimal_return']:.3f}, "
                 f"{len(path) - 1} moves", fontsize=9)
    ax.axis("off")
    return fig
