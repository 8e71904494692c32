"""Hyperparameters as data: one frozen dataclass of defaults, YAML presets that hold only what differs.

Resolution order (later wins): dataclass defaults -> preset for the env (env id, else its family such as
``atari``) -> the user's ``-c FILE`` -> ``--set KEY=VALUE`` overrides. Names follow Stable-Baselines3 /
RL-Zoo so that their YAML files load. Loading is strict: an unknown key is an error naming the valid
ones, a value of the wrong type is an error, and nothing is ever ``eval``ed.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from qzoo.errors import QzooError

# Upper bounds for values that a model file or a --set could otherwise make the process die on: torch aborts
# when asked for 100,000 threads, and every env copy with vec_env async is a process. A model file's config is
# checked exactly as the command line's (``build``), so a crafted file is refused as one line.
MAX_TORCH_THREADS = 1024
MAX_N_ENVS = 1024
MAX_LAYER_UNITS = 1 << 20
MAX_LAYERS = 64
# Seeds go to numpy, torch and gymnasium's reset(seed=...), which want 0 <= seed < 2**32; evaluation seeds are
# offset by a million (``agent.EVAL_SEED_OFFSET``) and episodes by their index.
MAX_SEED = 2**31 - 1


def _param(default: Any, help: str, kind: str, choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field with its help text, its value kind and, for strings, the allowed values."""
    meta = {"help": help, "kind": kind, "choices": choices}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DQNConfig:
    """Every hyperparameter of a DQN run. Intervals count env steps (agent steps, after frame skip)."""

    n_timesteps: int = _param(100_000, "env steps to train for", "int")
    learning_rate: float = _param(1e-4, "optimizer step size (SB3 default)", "float")
    buffer_size: int = _param(1_000_000, "replay memory capacity, in transitions", "int")
    learning_starts: int = _param(100, "env steps of experience collected before the first gradient step", "int")
    batch_size: int = _param(32, "transitions per minibatch (Mnih 2015: 32)", "int")
    tau: float = _param(1.0, "target update coefficient: 1 copies the online network, <1 is Polyak averaging", "float")
    gamma: float = _param(0.99, "discount factor", "float")
    train_freq: int = _param(4, "env steps between two training phases (Mnih 2015: 4)", "int")
    gradient_steps: int = _param(1, "gradient steps per training phase; -1 means one per env step collected", "int")
    target_update_interval: int = _param(10_000, "env steps between two target network updates (C)", "int")
    exploration_fraction: float = _param(0.1, "fraction of n_timesteps over which epsilon decays linearly", "float")
    exploration_initial_eps: float = _param(1.0, "epsilon at the first step", "float")
    exploration_final_eps: float = _param(0.05, "epsilon after the decay", "float")
    max_grad_norm: float = _param(10.0, "gradient-norm clipping threshold (SB3 default)", "float")
    double_q: bool = _param(True, "Double DQN target (van Hasselt et al. 2016)", "bool")
    loss: str = _param("huber", "TD loss", "str", ("huber", "mse"))
    optimizer: str = _param("adam", "optimizer (rmsprop uses Mnih 2015's alpha=0.95, eps=0.01)", "str", ("adam", "rmsprop"))
    network: str = _param(
        "auto", "Q-network: cnn for stacked frames, mlp for vectors, auto picks; de_cnn is data-efficient Rainbow's "
        "two-layer CNN (van Hasselt 2019)", "str", ("auto", "mlp", "cnn", "de_cnn"),
    )
    net_arch: tuple[int, ...] | None = _param(
        None, "hidden layer sizes: MLP layers (default 64,64) or CNN fully connected layers (default 512)", "ints?"
    )
    frame_stack: int = _param(4, "frames stacked into one Atari observation (Mnih 2015: 4)", "int")
    atari_protocol: str = _param(
        "auto", "Atari preprocessing: nature (NoFrameskip-v4 ids) or machado (ALE/*-v5 ids)", "str",
        ("auto", "nature", "machado"),
    )
    atari_crop: tuple[int, ...] | None = _param(
        None, "pixels cut from the 210x160 screen before resizing: top, bottom, left, right", "ints?"
    )
    env_kwargs: dict = _param({}, "keyword arguments for gymnasium.make", "dict")
    eval_freq: int = _param(10_000, "env steps between two evaluations during training (0: never)", "int")
    n_eval_episodes: int = _param(10, "episodes per evaluation", "int")
    eval_epsilon: float = _param(0.0, "epsilon of the evaluation policy", "float")
    stop_reward: float | None = _param(None, "stop training once an evaluation's mean return reaches this", "float?")
    checkpoint_freq: int = _param(50_000, "env steps between two checkpoints of the run (0: never)", "int")
    log_interval: int = _param(1_000, "env steps between two rows of training metrics", "int")
    seed: int = _param(0, "random seed of the run", "int")
    device: str = _param("auto", "torch device: auto picks cuda when present", "str", ("auto", "cpu", "cuda"))
    n_envs: int = _param(1, "copies of the env stepped together; every interval still counts env steps", "int")
    vec_env: str = _param("async", "with n_envs > 1: async steps the copies in subprocesses, sync in this one, "
                          "envpool in EnvPool's C++ threads (Atari *NoFrameskip-v4; the envpool extra)",
                          "str", ("async", "sync", "envpool"))
    replay_compression: str = _param(
        "none", "stacked frames kept as lossless LZ4 blocks: about 1.7 KB instead of 7.2 KB per Atari transition",
        "str", ("none", "lz4"),
    )
    precision: str = _param(
        "auto", "network arithmetic: auto uses bfloat16 autocast for the CNN where the CPU or GPU has native "
        "bfloat16, float32 elsewhere", "str", ("auto", "float32", "bfloat16"),
    )
    torch_threads: int = _param(
        0, "torch CPU threads. 0: 1 for MLPs and MinAtar's CNN; for the frame CNNs, the free physical cores this "
        "process may use (affinity, less the busy ones: /proc/stat over 0.2 s), at least 1 (qzoo.threads: measured "
        "alone and under load)", "int"
    )
    manual_mlp_step: bool = _param(
        True, "MLP with Adam: the gradient steps computed by hand, the same arithmetic on flat buffers with no "
        "autograd graph (plain MLP, Q values or QR quantiles: qzoo.mlp_step, a train_freq burst's target values in "
        "one pass, RL-Zoo's CartPole 2.8x faster end to end; the Rainbow switches' head: qzoo.head_step); false: "
        "autograd and torch.optim.Adam", "bool"
    )
    deterministic: bool = _param(
        False, "bit-exact runs: torch deterministic algorithms; needs device cpu and torch_threads >= 1", "bool"
    )
    # Rainbow switches (Hessel et al. 2018); the defaults give plain (Double) DQN. See docs/rainbow.md.
    dueling: bool = _param(False, "dueling value and advantage streams (Wang et al. 2016)", "bool")
    noisy: bool = _param(
        False, "NoisyNet layers in the head (Fortunato et al. 2018); exploration by noise, epsilon forced to 0", "bool"
    )
    noisy_sigma0: float = _param(0.5, "NoisyNet initial noise scale sigma0 (Fortunato 2018: 0.5)", "float")
    distributional: str = _param(
        "none", "return distribution: c51 (Bellemare et al. 2017) or qr, quantile regression (Dabney et al. 2018)",
        "str", ("none", "c51", "qr"),
    )
    n_atoms: int = _param(51, "atoms of c51 or quantiles of qr (Bellemare 2017: 51; Dabney 2018: 200)", "int")
    v_min: float = _param(-10.0, "c51 support's lowest return (Bellemare 2017: -10)", "float")
    v_max: float = _param(10.0, "c51 support's highest return (Bellemare 2017: 10)", "float")
    n_step: int = _param(1, "transitions summed into the return before bootstrapping (Hessel 2018: 3)", "int")
    prioritized_replay: bool = _param(False, "proportional prioritised replay (Schaul et al. 2016)", "bool")
    prioritized_replay_alpha: float = _param(0.5, "priority exponent alpha (Hessel 2018: 0.5)", "float")
    prioritized_replay_beta0: float = _param(
        0.4, "importance-sampling exponent at the start, annealed linearly to 1 over n_timesteps (Hessel 2018: 0.4)",
        "float",
    )
    prioritized_replay_eps: float = _param(1e-6, "added to |TD error| so that no priority is 0", "float")
    adam_eps: float = _param(1e-8, "Adam's epsilon (torch default 1e-8; Hessel 2018: 1.5e-4)", "float")
    # Ape-X-style distributed training on Ray (Horgan et al. 2018; qzoo.apex, qzoo.distributed, docs/departures.md).
    actors: int = _param(
        0, "Ape-X actor processes on Ray (the ray extra), each stepping n_envs env copies with its own fixed epsilon "
        "0.4^(1+7i/(N-1)); the learner trains in this process. 0: today's single-process loop", "int"
    )
    actor_chunk_steps: int = _param(256, "env steps per chunk an actor sends the learner", "int")
    max_chunks_in_flight: int = _param(
        2, "chunks each actor may have been asked for and not yet delivered (more: actors wait)", "int"
    )
    weight_publish_seconds: float = _param(
        1.0, "seconds between two publications of the learner's weights to the actors (one ray.put each)", "float"
    )
    weight_publish_updates: int = _param(
        100, "also publish after this many gradient steps since the last publication, whichever comes first "
        "(0: by time only; Horgan 2018: actors fetch every 400 frames)", "int"
    )
    rate_band: int = _param(
        256, "rate limiter band, in env steps: gradient steps stay within gradient_steps / train_freq x "
        "(env steps - learning_starts +- rate_band), as Reverb's SampleToInsertRatio", "int"
    )
    actor_max_restarts: int = _param(3, "times Ray restarts a dead actor before the run fails", "int")

    def __post_init__(self) -> None:
        checks = [
            (self.n_timesteps >= 0, "n_timesteps must be >= 0"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.buffer_size >= 1, "buffer_size must be >= 1"),
            (self.learning_starts >= 0, "learning_starts must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (0 < self.tau <= 1, "tau must be in (0, 1]"),
            (0 <= self.gamma <= 1, "gamma must be in [0, 1]"),
            (self.train_freq >= 1, "train_freq must be >= 1"),
            (self.gradient_steps >= 1 or self.gradient_steps == -1, "gradient_steps must be >= 1 or -1"),
            (self.target_update_interval >= 1, "target_update_interval must be >= 1"),
            (0 <= self.exploration_fraction <= 1, "exploration_fraction must be in [0, 1]"),
            (0 <= self.exploration_initial_eps <= 1, "exploration_initial_eps must be in [0, 1]"),
            (0 <= self.exploration_final_eps <= 1, "exploration_final_eps must be in [0, 1]"),
            (self.max_grad_norm > 0, "max_grad_norm must be > 0"),
            (self.frame_stack >= 1, "frame_stack must be >= 1"),
            (self.n_envs >= 1, "n_envs must be >= 1"),
            (self.n_envs <= MAX_N_ENVS, f"n_envs must be <= {MAX_N_ENVS}"),
            (self.net_arch is None or all(n >= 1 for n in self.net_arch), "net_arch sizes must be >= 1"),
            (self.net_arch is None or (len(self.net_arch) <= MAX_LAYERS and max(self.net_arch, default=1)
                                       <= MAX_LAYER_UNITS),
             f"net_arch must have at most {MAX_LAYERS} layers of at most {MAX_LAYER_UNITS} units"),
            (self.atari_crop is None or (len(self.atari_crop) == 4 and min(self.atari_crop) >= 0),
             "atari_crop must be four numbers >= 0: top, bottom, left, right"),
            (self.eval_freq >= 0 and self.checkpoint_freq >= 0, "eval_freq and checkpoint_freq must be >= 0"),
            (self.n_eval_episodes >= 1, "n_eval_episodes must be >= 1"),
            (0 <= self.eval_epsilon <= 1, "eval_epsilon must be in [0, 1]"),
            (self.log_interval >= 1, "log_interval must be >= 1"),
            (0 <= self.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}]"),
            (0 <= self.torch_threads <= MAX_TORCH_THREADS, f"torch_threads must be in [0, {MAX_TORCH_THREADS}]"),
            # auto stays allowed so that a saved deterministic run loads for evaluation on any machine.
            (self.noisy_sigma0 >= 0, "noisy_sigma0 must be >= 0"),
            (self.n_atoms >= 1, "n_atoms must be >= 1"),
            (self.n_step >= 1, "n_step must be >= 1"),
            (self.prioritized_replay_alpha >= 0, "prioritized_replay_alpha must be >= 0"),
            (0 <= self.prioritized_replay_beta0 <= 1, "prioritized_replay_beta0 must be in [0, 1]"),
            (self.prioritized_replay_eps > 0, "prioritized_replay_eps must be > 0"),
            (self.adam_eps > 0, "adam_eps must be > 0"),
            (not self.deterministic or (self.device != "cuda" and self.torch_threads >= 1),
             "deterministic needs device cpu and a fixed torch_threads >= 1"),
            (self.actors >= 0 and self.actor_chunk_steps >= 1 and self.max_chunks_in_flight >= 1,
             "actors must be >= 0, actor_chunk_steps and max_chunks_in_flight >= 1"),
            (self.weight_publish_seconds >= 0 and self.weight_publish_updates >= 0 and self.rate_band >= 0
             and self.actor_max_restarts >= 0,
             "weight_publish_seconds, weight_publish_updates, rate_band and actor_max_restarts must be >= 0"),
            (not (self.deterministic and self.actors > 0),
             "deterministic runs cannot use actors > 0: distributed runs are not bit-exact"),
        ]
        for ok, message in checks:
            if not ok:
                raise QzooError(f"invalid config: {message}")

    def check_combination(self) -> None:
        """Rules between keys, checked when an agent is built (a saved config.yml of any single valid values
        still loads): C51's support and atoms, and a memory larger than an n-step window, filled with one before learning."""
        checks = [
            (self.distributional != "c51" or self.n_atoms >= 2, "distributional c51 needs n_atoms >= 2"),
            (self.distributional != "c51" or self.v_min < self.v_max, "distributional c51 needs v_min < v_max"),
            (self.n_step == 1 or self.buffer_size > self.n_step, "buffer_size must be > n_step"),
            # The first gradient step needs a complete n-step window in the memory.
            (self.learning_starts >= self.n_step - 1, "learning_starts must be >= n_step - 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise QzooError(f"invalid config: {message}")
        self.check_network_fits()

    def check_network_fits(self) -> None:
        """Refuse, before allocating, hidden layers whose weights (online and target networks, gradients and two
        Adam moments: 5 float32 copies) exceed the memory available now."""
        from qzoo.buffer import available_memory_bytes

        layers = list(self.net_arch or ())
        nbytes = 5 * 4 * sum(a * b + b for a, b in zip(layers, layers[1:]))
        available = available_memory_bytes()
        if available is not None and nbytes > available:
            raise QzooError(f"invalid config: net_arch {layers} needs {nbytes / 2**30:.1f} GiB of weights but only "
                            f"{available / 2**30:.1f} GiB is available")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class QLearningConfig:
    """Tabular Q-learning (Watkins 1989). Defaults: the Hugging Face Deep RL course, unit 2."""

    n_timesteps: int = _param(100_000, "env steps to train for", "int")
    learning_rate: float = _param(0.7, "step size of the table update (course: 0.7)", "float")
    gamma: float = _param(0.95, "discount factor (course: 0.95)", "float")
    exploration_schedule: str = _param(
        "exponential", "epsilon decay: exponential per episode (as the course teaches) or linear in env steps",
        "str", ("exponential", "linear"),
    )
    exploration_initial_eps: float = _param(1.0, "epsilon at the start (course: max_epsilon)", "float")
    exploration_final_eps: float = _param(0.05, "epsilon floor (course: min_epsilon)", "float")
    exploration_decay_rate: float = _param(
        0.0005, "exponential: eps = final + (initial - final) * exp(-rate * episode) (course: decay_rate)", "float"
    )
    exploration_fraction: float = _param(0.5, "linear: fraction of n_timesteps over which epsilon decays", "float")
    env_kwargs: dict = _param({}, "keyword arguments for gymnasium.make", "dict")
    eval_freq: int = _param(10_000, "env steps between two evaluations during training (0: never)", "int")
    n_eval_episodes: int = _param(100, "episodes per evaluation (course: 100)", "int")
    eval_epsilon: float = _param(0.0, "epsilon of the evaluation policy", "float")
    stop_reward: float | None = _param(None, "stop training once an evaluation's mean return reaches this", "float?")
    checkpoint_freq: int = _param(50_000, "env steps between two checkpoints of the run (0: never)", "int")
    log_interval: int = _param(10_000, "env steps between two rows of training metrics", "int")
    seed: int = _param(0, "random seed of the run", "int")

    def __post_init__(self) -> None:
        checks = [
            (self.n_timesteps >= 0, "n_timesteps must be >= 0"),
            (0 < self.learning_rate <= 1, "learning_rate must be in (0, 1]"),
            (0 <= self.gamma <= 1, "gamma must be in [0, 1]"),
            (0 <= self.exploration_initial_eps <= 1, "exploration_initial_eps must be in [0, 1]"),
            (0 <= self.exploration_final_eps <= 1, "exploration_final_eps must be in [0, 1]"),
            (self.exploration_decay_rate >= 0, "exploration_decay_rate must be >= 0"),
            (0 <= self.exploration_fraction <= 1, "exploration_fraction must be in [0, 1]"),
            (self.eval_freq >= 0 and self.checkpoint_freq >= 0, "eval_freq and checkpoint_freq must be >= 0"),
            (self.n_eval_episodes >= 1, "n_eval_episodes must be >= 1"),
            (0 <= self.eval_epsilon <= 1, "eval_epsilon must be in [0, 1]"),
            (self.log_interval >= 1, "log_interval must be >= 1"),
            (0 <= self.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}]"),
        ]
        for ok, message in checks:
            if not ok:
                raise QzooError(f"invalid config: {message}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


Config = DQNConfig | QLearningConfig
# rainbow is the DQN agent with the presets of presets/rainbow.yml (every Rainbow switch on).
# der is data-efficient Rainbow (van Hasselt et al. 2019): presets/der.yml on top of rainbow.yml.
SCHEMAS: dict[str, type] = {"dqn": DQNConfig, "rainbow": DQNConfig, "der": DQNConfig, "qlearning": QLearningConfig}


def to_dict(config: Any) -> dict[str, Any]:
    """Plain YAML-ready values of a config (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _fields(schema: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(schema)}

# RL-Zoo keys that qzoo understands under another form, and those that have no meaning here.
# They are reported to the user, never dropped silently.
_RLZOO_IGNORED = {
    "env_wrapper": "qzoo applies its own Atari protocol (see atari_protocol)",
    "optimize_memory_usage": "qzoo's replay memory always stores each frame once",
    "replay_buffer_class": "qzoo has one replay memory",
    "replay_buffer_kwargs": "qzoo has one replay memory",
    "normalize": "observation normalisation is not part of DQN",
    "vec_env_wrapper": "qzoo builds its own vector env from n_envs and vec_env",
    "callback": "callbacks are not configurable from YAML",
    "monitor_kwargs": "qzoo records episodes itself",
    "verbose": "qzoo always shows progress",
    "tensorboard_log": "every qzoo run writes TensorBoard events in its run folder",
}


# ---------------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML safely; a syntax error becomes one line naming ``source``."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise QzooError(f"{source}: malformed YAML{where}: {problem}") from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: a YAML scalar or list, so ``1e-4`` is a float and ``[64,64]`` a list."""
    return parse_yaml(text, f"value {text!r}")


def parse_assignments(items: list[str], what: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise QzooError(f"{what} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


# ------------------------------------------------------------------------------------- validation


def _closest(name: str, valid: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(field_: dataclasses.Field, value: Any, source: str) -> Any:
    """Check ``value`` against the field's kind; return it in canonical form."""
    name, meta = field_.name, field_.metadata
    kind, choices = meta["kind"], meta["choices"]
    bad = QzooError(f"{source}: {name} must be {_KIND_WORDS[kind]}, got {value!r}")
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if kind == "int":
        # RL-Zoo writes `n_timesteps: !!float 1e6`: an integral float is accepted as an int.
        # is_integer, not int(value): int() of .nan or .inf raises instead of saying what is wrong.
        if isinstance(value, bool) or not (isinstance(value, int) or isinstance(value, float) and value.is_integer()):
            raise bad
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):  # .nan passes every comparison check; .inf fails later, in the loss
            raise QzooError(f"{source}: {name} must be a finite number, got {value!r}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise bad
        if choices and value not in choices:
            raise QzooError(f"{source}: {name} must be one of {', '.join(choices)}, got {value!r}")
        return value
    if kind == "ints":
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise bad
        return tuple(value)
    if kind == "dict":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    raise AssertionError(kind)


_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "ints?": "a list of integers or null",
    "float?": "a number or null",
    "dict": "a mapping",
}


def validate(values: Mapping[str, Any], source: str, schema: type = DQNConfig) -> dict[str, Any]:
    """Strictly check a mapping of hyperparameters; unknown keys name the valid ones."""
    fields = _fields(schema)
    out = {}
    valid = sorted(fields)
    for name, value in values.items():
        if name not in fields:
            raise QzooError(
                f"{source}: unknown hyperparameter {name!r}{_closest(str(name), valid)}; valid: {', '.join(valid)}"
            )
        out[name] = _coerce(fields[name], value, source)
    return out


def build(values: Mapping[str, Any], source: str = "config", schema: type = DQNConfig) -> Any:
    """A config of ``schema`` from a mapping of hyperparameters, checked like any user input."""
    return schema(**validate(values, source, schema))


def replace(config: Any, source: str = "config", **overrides: Any) -> Any:
    """A copy of ``config`` with checked ``overrides``."""
    return build({**to_dict(config), **overrides}, source, type(config))


# ---------------------------------------------------------------------------------- RL-Zoo format

# Where qzoo's DQN defaults differ from Stable-Baselines3's DQN (stable_baselines3/dqn/dqn.py, 2.9.2): every other
# default is the same (learning_rate 1e-4, buffer_size 1e6, learning_starts 100, batch_size 32, tau 1, gamma 0.99,
# train_freq 4, gradient_steps 1, target_update_interval 1e4, exploration 0.1 / 1.0 / 0.05, max_grad_norm 10,
# smooth L1 (Huber) loss, Adam with eps 1e-8, MLP [64, 64], NatureCNN with 512 features).
ZOO_COMPATIBLE = {
    "double_q": False,  # SB3's DQN target is max_a Q_target(s', a) (Mnih 2015), not Double DQN
    "precision": "float32",  # SB3 computes in float32; qzoo's auto uses bfloat16 for the CNN where native
}


def zoo_compatible(algo: str = "dqn") -> dict[str, Any]:
    """``qzoo train --zoo-compatible``: the values that give Stable-Baselines3's DQN where qzoo's defaults differ."""
    if algo != "dqn":
        raise QzooError("--zoo-compatible gives Stable-Baselines3's DQN; it goes with --algo dqn")
    return dict(ZOO_COMPATIBLE)



def _parse_policy_kwargs(text: str, source: str) -> dict[str, Any]:
    """Read RL-Zoo's ``"dict(net_arch=[256, 256])"`` without eval: only literal keyword arguments."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
        if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "dict" and not tree.args:
            return {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords if kw.arg}
        value = ast.literal_eval(tree)
        if isinstance(value, dict):
            return value
    except (SyntaxError, ValueError):
        pass
    raise QzooError(f"{source}: policy_kwargs must be a literal like dict(net_arch=[256, 256]), got {text!r}")


def translate_rlzoo(
    values: Mapping[str, Any], source: str, schema: type = DQNConfig
) -> tuple[dict[str, Any], list[str]]:
    """Map RL-Zoo / Stable-Baselines3 keys onto qzoo's; returns the values and the notes for the user."""
    out: dict[str, Any] = {}
    notes: list[str] = []
    fields = _fields(schema)
    for key, value in values.items():
        if key in fields and key != "train_freq":
            out[key] = value
        elif key == "policy":
            network = {"MlpPolicy": "mlp", "CnnPolicy": "cnn"}.get(value)
            if network is None:
                raise QzooError(f"{source}: policy must be MlpPolicy or CnnPolicy, got {value!r}")
            out["network"] = network
        elif key == "policy_kwargs":
            kwargs = value if isinstance(value, dict) else _parse_policy_kwargs(str(value), source)
            for name, arg in kwargs.items():
                if name == "net_arch":
                    out["net_arch"] = arg
                else:
                    notes.append(f"{source}: ignored policy_kwargs.{name} (qzoo does not support it)")
        elif key == "train_freq" and isinstance(value, (list, tuple)):
            if len(value) != 2 or value[1] != "step":
                raise QzooError(f"{source}: train_freq must count env steps, got {value!r}")
            out["train_freq"] = value[0]
        elif key == "n_steps" and "n_step" in fields:  # SB3's DQN name for n-step returns
            out["n_step"] = value
        elif key in _RLZOO_IGNORED:
            notes.append(f"{source}: ignored {key} ({_RLZOO_IGNORED[key]})")
        else:
            out[key] = value  # validate() checks it against the schema, naming the valid keys
    return out, notes


# ------------------------------------------------------------------------------------------ presets


ATARI_FAMILY = "atari"


def load_preset_file(text: str, source: str) -> dict[str, dict[str, Any]]:
    """A YAML file keyed by env id (or family) -> hyperparameter mapping."""
    data = parse_yaml(text, source)
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise QzooError(f"{source}: expected a mapping of env id -> hyperparameters")
    return data


# An algorithm's presets hold only what differs from those of the algorithms it builds on.
PRESET_BASES: dict[str, tuple[str, ...]] = {"rainbow": ("dqn",), "der": ("dqn", "rainbow")}
DEFAULT_ENTRY = "default"  # a preset file's entry for every env, applied before the family's


def builtin_presets(algo: str = "dqn") -> dict[str, dict[str, Any]]:
    text = resources.files("qzoo").joinpath("presets", f"{algo}.yml").read_text()
    return load_preset_file(text, f"presets/{algo}.yml")


def select_entry(presets: Mapping[str, Any], env_id: str, family: str | None) -> tuple[str, dict] | None:
    """The entry of a user's file for ``env_id``, else for its family (RL-Zoo's rule: one entry, complete)."""
    for key in (env_id, family):
        if key is not None and key in presets:
            return key, presets[key]
    return None


def _variant(key: str) -> tuple[str, dict[str, Any]]:
    """``"FrozenLake-v1[is_slippery=false]"`` -> ``("FrozenLake-v1", {"is_slippery": False})``."""
    name, _, rest = key.partition("[")
    if not rest:
        return key, {}
    return name, parse_assignments([a for a in rest.rstrip("]").split(",") if a], f"preset {key}")


def preset_entries(presets: Mapping[str, Any], env_id: str, family: str | None, env_kwargs: Mapping[str, Any]):
    """The built-in entries that apply, most general first: ``default``, family, env id, then env id variants
    (``ENV[key=value,...]``) whose env_kwargs all match the user's."""
    keys = [DEFAULT_ENTRY] if DEFAULT_ENTRY in presets else []
    keys += [family] if family in presets else []
    keys += [env_id] if env_id in presets else []
    variants = []
    for key in presets:
        name, wanted = _variant(key)
        if wanted and name == env_id and all(k in env_kwargs and env_kwargs[k] == v for k, v in wanted.items()):
            variants.append((len(wanted), key))
    keys += [key for _, key in sorted(variants, key=lambda v: v[0])]  # the more specific, the later
    return [(key, presets[key]) for key in keys]


def resolve(
    env_id: str,
    family: str | None,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    algo: str = "dqn",
    presets: bool = True,
    base: Mapping[str, Any] | None = None,
) -> tuple[Any, list[str]]:
    """Resolve a run's config: defaults -> built-in presets -> ``base`` (a ``--from`` source's own values, which
    stand where presets would) -> ``-c FILE`` -> overrides -> ``env_kwargs``.

    Returns the config and notes for the user (which presets applied, keys that were ignored).
    """
    schema = SCHEMAS[algo]
    values: dict[str, Any] = {}
    notes: list[str] = []
    user_env_kwargs = {**(overrides or {}).get("env_kwargs", {}), **(env_kwargs or {})}
    # Built-in presets layer: each holds only what differs from the one before.
    # rainbow: dqn.yml's entries for the env first, then rainbow.yml's (PRESET_BASES).
    for name in [*PRESET_BASES.get(algo, ()), algo] if presets else []:
        prefix = f"{name} " if name in PRESET_BASES else ""  # notes say "preset: rainbow atari"
        for key, entry in preset_entries(builtin_presets(name), env_id, family, user_env_kwargs):
            translated, extra = translate_rlzoo(entry, f"preset {prefix}{key}", schema)
            values.update(validate(translated, f"preset {prefix}{key}", schema))
            notes.append(f"preset: {prefix}{key}")
            notes += extra
    if base:
        values.update(validate(base, "the source's config", schema))
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise QzooError(f"config file not found: {config_file}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise QzooError(f"{config_file} is not a text (UTF-8 YAML) file") from None
        data = parse_yaml(text, config_file)
        if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()) and not (
            set(data) <= {"env_kwargs"}
        ):
            entry = select_entry(data, env_id, family)
            if entry is None:
                raise QzooError(f"{config_file}: no entry for {env_id}" + (f" or {family}" if family else ""))
            source, data = f"{config_file}[{entry[0]}]", entry[1]
        else:
            source = config_file
        if not isinstance(data, dict):
            raise QzooError(f"{config_file}: expected a mapping of hyperparameters")
        translated, extra = translate_rlzoo(data, source, schema)
        values.update(validate(translated, source, schema))
        notes += extra
        if algo == "dqn" and not base and "double_q" not in translated and "double_q" not in (overrides or {}):
            # The same file under RL-Zoo runs SB3's plain DQN (issue 15): say so rather than differ silently.
            notes.append(f"{config_file}: qzoo runs Double DQN by default (double_q: true) where Stable-Baselines3 "
                         f"runs plain DQN; --set double_q=false (or --zoo-compatible) gives SB3's DQN")
    if overrides:
        translated, extra = translate_rlzoo(overrides, "--set", schema)
        values.update(validate(translated, "--set", schema))
        notes += extra
    if env_kwargs:
        values["env_kwargs"] = {**values.get("env_kwargs", {}), **env_kwargs}
    return build(values, "config", schema), notes


def describe_fields(schema: type = DQNConfig) -> list[tuple[str, Any, str]]:
    """(name, default, help) for each hyperparameter, for ``qzoo presets`` and docs."""
    defaults = to_dict(schema())
    return [(name, defaults[name], f.metadata["help"]) for name, f in _fields(schema).items()]
