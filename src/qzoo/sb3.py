"""Stable-Baselines3 DQN zips in and out: read one into a qzoo agent, write a qzoo agent as one.

An SB3 model file is a zip (``stable_baselines3.common.save_util.save_to_zip_file``) holding:

* ``data``: JSON of the model's attributes. Plain values (``gamma``, ``buffer_size``, ``num_timesteps``) are JSON;
  everything else (the policy class, the spaces, schedules) is a cloudpickle under ``":serialized:"`` beside a few
  readable fields (``"_shape"``, ``"dtype"``, ``"n"``, the policy class's ``"__module__"``).
* ``policy.pth``: the policy's ``state_dict`` (``q_net.*`` and ``q_net_target.*`` for DQN).
* ``policy.optimizer.pth``, ``pytorch_variables.pth``, ``_stable_baselines3_version``, ``system_info.txt``.

Reading never unpickles: ``data`` is parsed as JSON and its ``":serialized:"`` strings are never decoded, the
weights go through ``torch.load(weights_only=True)`` (which refuses any pickled object but tensors and plain
containers), and nothing else in the zip is opened. Only DQN's ``MlpPolicy`` and ``CnnPolicy`` with SB3's own
extractors (``FlattenExtractor``, ``NatureCNN``) and ReLU are read; anything else is one ``QzooError`` line.

Layouts (both ways):

    SB3 MlpPolicy   q_net.q_net.{0,2,..,2k}                 -> MLP       net.1.{0,2,..,2k}
    SB3 CnnPolicy   q_net.features_extractor.cnn.{0,2,4}    -> NatureCNN features.{0,2,4}
                    q_net.features_extractor.linear.0       ->           head.0     (features_dim, ReLU)
                    q_net.q_net.{0,2,..,2k}                 ->           head.{2,4,..,2k+2}

SB3's Atari stack (``make_atari_env`` + ``VecFrameStack(4)``) is channels-last; DQN wraps it in
``VecTransposeImage`` so the policy sees (4, 84, 84) uint8, channels first, oldest frame first, divided by 255
inside the policy: the layout qzoo's ``NatureCNN`` takes. What differs in the envs is listed in
docs/departures.md (SB3 pads a new episode's stack with zeros where qzoo repeats the first frame).

Writing (``export``) goes through Stable-Baselines3 itself (the ``sb3`` extra): it builds an SB3 DQN with the
agent's spaces and hyperparameters, copies the weights in and calls its ``save``, so the file is SB3's own.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from qzoo.errors import QzooError

DQN_POLICY_MODULE = "stable_baselines3.dqn.policies"
# policy_kwargs that change nothing qzoo computes (the optimizer is training state qzoo does not read) or that
# it maps; any other key (activation_fn, a custom features_extractor_class, ...) is refused.
_KNOWN_POLICY_KWARGS = {"net_arch", "normalize_images", "features_extractor_kwargs", "optimizer_class",
                        "optimizer_kwargs"}
# SB3 hyperparameters with the same name and meaning in qzoo, read when they are plain JSON numbers.
_SAME_NAMES = ("learning_rate", "buffer_size", "learning_starts", "batch_size", "tau", "gamma", "gradient_steps",
               "target_update_interval", "exploration_fraction", "exploration_initial_eps", "exploration_final_eps",
               "max_grad_norm")
ENV_KEY = "qzoo_env_id"  # what ``export`` adds to ``data`` so that the zip names its env (SB3 ignores it)


def read_zip(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``data`` (JSON, nothing unpickled) and ``policy.pth`` (``weights_only``) of an SB3 zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if not {"data", "policy.pth"} <= names:
                raise QzooError(f"{path} is a zip but not a Stable-Baselines3 model (no data and policy.pth in it)")
            text, weights_file = archive.read("data"), archive.open("policy.pth")
            try:
                weights = torch.load(weights_file, map_location="cpu", weights_only=True)
            except Exception as exc:  # weights_only refuses any object but tensors: a pickle that would run code
                raise QzooError(f"{path}: policy.pth is not plain weights; refused without running it "
                                f"({type(exc).__name__})") from None
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise QzooError(f"cannot read {path} as a Stable-Baselines3 zip: {type(exc).__name__}") from None
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise QzooError(f"{path}: its data entry is not JSON; refused (qzoo never unpickles a model)") from None
    if not isinstance(data, dict) or not isinstance(weights, dict):
        raise QzooError(f"{path} is not a Stable-Baselines3 model (data or policy.pth of the wrong kind)")
    return data, weights


def _readable(entry: Any, key: str) -> Any:
    """A readable field of a serialized entry of ``data``: SB3 writes ``str(value)``; lists and numbers are JSON."""
    value = entry.get(key) if isinstance(entry, dict) else None
    try:
        return json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return value


def check_dqn(path: str | Path, data: Mapping[str, Any]) -> None:
    """Refuse, as one line, a zip that is not SB3's DQN with its own policy."""
    policy = data.get("policy_class")
    module = policy.get("__module__") if isinstance(policy, dict) else None
    if module != DQN_POLICY_MODULE:
        raise QzooError(f"{path} holds a Stable-Baselines3 model whose policy comes from {module or 'an unknown module'}; "
                        f"qzoo reads DQN's MlpPolicy and CnnPolicy ({DQN_POLICY_MODULE})")
    kwargs = data.get("policy_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise QzooError(f"{path}: policy_kwargs cannot be read")
    unknown = sorted(set(kwargs) - _KNOWN_POLICY_KWARGS)
    if unknown:
        raise QzooError(f"{path} uses a custom DQN policy ({', '.join(unknown)} in policy_kwargs); qzoo reads SB3's "
                        f"MlpPolicy and CnnPolicy with ReLU and its own feature extractors")
    if kwargs.get("normalize_images", True) is not True:
        raise QzooError(f"{path}: normalize_images=False is not a layout qzoo's networks have")
    if "Discrete" not in str((data.get("action_space") or {}).get(":type:", "")):
        raise QzooError(f"{path}: DQN needs a Discrete action space")


def q_net_weights(path: str | Path, weights: Mapping[str, torch.Tensor], prefix: str = "q_net") -> tuple[str, dict[str, torch.Tensor], tuple[int, ...]]:
    """SB3's ``prefix.*`` weights under qzoo's names: (network kind, state_dict, hidden layer sizes)."""
    own = {k[len(prefix) + 1:]: v for k, v in weights.items() if k.startswith(prefix + ".")}
    head = {k: v for k, v in own.items() if k.startswith("q_net.")}
    layers = sorted({int(m.group(1)) for k in head if (m := re.fullmatch(r"q_net\.(\d+)\.(weight|bias)", k))})
    extractor = {k: v for k, v in own.items() if k.startswith("features_extractor.")}
    expected_head = {f"q_net.{i}.{p}" for i in layers for p in ("weight", "bias")}
    cnn_keys = {f"features_extractor.cnn.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    cnn_keys |= {f"features_extractor.linear.0.{p}" for p in ("weight", "bias")}
    if not layers or set(head) != expected_head or layers != list(range(0, 2 * len(layers), 2)):
        raise QzooError(f"{path}: policy.pth does not hold the Q-network layers of SB3's DQN (a custom policy?)")
    sizes = [int(head[f"q_net.{i}.weight"].shape[0]) for i in layers]
    if not extractor:  # FlattenExtractor has no weights: an MlpPolicy
        return "mlp", {f"net.1.{i}.{p}": head[f"q_net.{i}.{p}"] for i in layers for p in ("weight", "bias")}, tuple(sizes[:-1])
    if set(extractor) != cnn_keys:
        raise QzooError(f"{path}: the feature extractor is not SB3's NatureCNN or FlattenExtractor (a custom policy?)")
    state = {f"features.{i}.{p}": extractor[f"features_extractor.cnn.{i}.{p}"] for i in (0, 2, 4) for p in ("weight", "bias")}
    state |= {f"head.0.{p}": extractor[f"features_extractor.linear.0.{p}"] for p in ("weight", "bias")}
    state |= {f"head.{i + 2}.{p}": head[f"q_net.{i}.{p}"] for i in layers for p in ("weight", "bias")}
    features_dim = int(extractor["features_extractor.linear.0.weight"].shape[0])
    return "cnn", state, (features_dim, *sizes[:-1])


def guess_env_id(path: str | Path, data: Mapping[str, Any]) -> str | None:
    """The env a zip names: ``export``'s own key, else RL-Zoo's file name ``<algo>-<env id>.zip`` when that env
    is registered; None otherwise."""
    from qzoo.envs import env_spec

    if isinstance(data.get(ENV_KEY), str):
        return data[ENV_KEY]
    match = re.fullmatch(r"[a-z0-9_]+-(.+)", Path(path).stem)
    if match:
        try:
            env_spec(match.group(1))
            return match.group(1)
        except QzooError:
            return None
    return None


def config_values(data: Mapping[str, Any], network: str, net_arch: tuple[int, ...], obs_shape: list[int]) -> dict[str, Any]:
    """qzoo hyperparameters of an SB3 DQN: the same-named plain numbers, its network, plain DQN's target
    (SB3 has no Double DQN), its total steps and, for frames, the stack. ``train_freq`` is a pickled NamedTuple
    in ``data``: not read, the preset's value stands."""
    values: dict[str, Any] = {k: data[k] for k in _SAME_NAMES
                              if isinstance(data.get(k), (int, float)) and not isinstance(data.get(k), bool)}
    values.update(network=network, net_arch=list(net_arch), double_q=False)
    if isinstance(data.get("_total_timesteps"), int) and data["_total_timesteps"] > 0:
        values["n_timesteps"] = data["_total_timesteps"]
    if network == "cnn":
        values["frame_stack"] = obs_shape[0]
    return values


def load(path: str | Path, env_id: str | None = None):
    """An SB3 DQN zip as a qzoo ``DQN`` agent (online and target weights, counters); ``env_id`` where the zip
    does not name it."""
    from qzoo import config as cfg
    from qzoo.dqn import DQN
    from qzoo.envs import family

    data, weights = read_zip(path)
    check_dqn(path, data)
    named = guess_env_id(path, data)
    if env_id and isinstance(data.get(ENV_KEY), str) and env_id != data[ENV_KEY]:
        raise QzooError(f"{path} holds a {data[ENV_KEY]} agent, not {env_id}")
    env_id = env_id or named
    if not env_id:
        raise QzooError(f"{path} is a Stable-Baselines3 model that does not name its env; pass --env ENV_ID")
    network, q_state, net_arch = q_net_weights(path, weights)
    obs_shape = _readable(data.get("observation_space"), "_shape")
    if not isinstance(obs_shape, list):
        raise QzooError(f"{path}: its observation space cannot be read")
    config, _ = cfg.resolve(env_id, family(env_id), overrides=config_values(data, network, net_arch, obs_shape))
    agent = DQN(env_id, config)
    if list(agent.obs_shape) != obs_shape or agent.n_actions != _readable(data.get("action_space"), "n"):
        agent.close()
        raise QzooError(f"{path} was trained on observations {tuple(obs_shape)} and "
                        f"{_readable(data.get('action_space'), 'n')} actions; qzoo's {env_id} has {agent.obs_shape} "
                        f"and {agent.n_actions}")
    agent.q_net.load_state_dict(q_state)
    target = q_net_weights(path, weights, "q_net_target")[1] if any(k.startswith("q_net_target.") for k in weights) else q_state
    agent.target_net.load_state_dict(target)
    agent.num_timesteps = int(data.get("num_timesteps") or 0)
    agent.num_episodes = int(data.get("_episode_num") or 0)
    agent.num_updates = int(data.get("_n_updates") or 0)
    return agent


# ---------------------------------------------------------------------------------------------- export


def sb3_layout(agent) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """The SB3 policy name, its policy_kwargs and the ``q_net.*`` weights of a plain DQN head; Rainbow heads are
    refused (SB3's DQN has neither dueling, noisy nor distributional heads)."""
    c = agent.config
    rainbow = [name for name, on in (("dueling", c.dueling), ("noisy", c.noisy),
                                     ("distributional", c.distributional != "none")) if on]
    if rainbow:
        raise QzooError(f"Stable-Baselines3's DQN has no {', '.join(rainbow)} head; only plain DQN heads export")
    if agent.network_kind not in ("mlp", "cnn"):
        raise QzooError(f"Stable-Baselines3 has no {agent.network_kind} network; only mlp and cnn export")
    state = agent.q_net.state_dict()
    if agent.network_kind == "mlp":
        layers = sorted({int(k.split(".")[2]) for k in state})
        hidden = [int(state[f"net.1.{i}.weight"].shape[0]) for i in layers[:-1]]
        weights = {f"q_net.{i}.{p}": state[f"net.1.{i}.{p}"] for i in layers for p in ("weight", "bias")}
        return "MlpPolicy", {"net_arch": hidden}, weights
    layers = sorted({int(k.split(".")[1]) for k in state if k.startswith("head.")})
    hidden = [int(state[f"head.{i}.weight"].shape[0]) for i in layers[:-1]]
    weights = {f"features_extractor.cnn.{i}.{p}": state[f"features.{i}.{p}"] for i in (0, 2, 4) for p in ("weight", "bias")}
    weights |= {f"features_extractor.linear.0.{p}": state[f"head.0.{p}"] for p in ("weight", "bias")}
    weights |= {f"q_net.{i - 2}.{p}": state[f"head.{i}.{p}"] for i in layers[1:] for p in ("weight", "bias")}
    return "CnnPolicy", {"net_arch": hidden[1:], "features_extractor_kwargs": {"features_dim": hidden[0]}}, weights


def export(agent, out: str | Path) -> Path:
    """Write ``agent`` as an SB3 DQN zip that ``stable_baselines3.DQN.load`` opens and whose ``predict`` is the
    agent's greedy action. Needs Stable-Baselines3 (``pip install 'qzoo[sb3]'``)."""
    try:
        from stable_baselines3 import DQN as SB3DQN
    except ImportError:
        raise QzooError("export --format sb3 needs Stable-Baselines3: pip install 'qzoo[sb3]'") from None
    policy, policy_kwargs, weights = sb3_layout(agent)
    env = agent.make_env(training=False)
    spaces = _spaces_env(env.observation_space, env.action_space)
    env.close()
    c = agent.config
    # buffer_size 1 while building: SB3 allocates its replay memory in the constructor; the saved value is the run's.
    model = SB3DQN(policy, spaces, learning_rate=c.learning_rate, buffer_size=1, learning_starts=c.learning_starts,
                   batch_size=c.batch_size, tau=c.tau, gamma=c.gamma, train_freq=c.train_freq,
                   gradient_steps=c.gradient_steps, target_update_interval=c.target_update_interval,
                   exploration_fraction=c.exploration_fraction, exploration_initial_eps=c.exploration_initial_eps,
                   exploration_final_eps=c.exploration_final_eps, max_grad_norm=c.max_grad_norm,
                   policy_kwargs=policy_kwargs, seed=c.seed, device="cpu")
    model.policy.q_net.load_state_dict(weights)
    model.policy.q_net_target.load_state_dict(weights)
    model.buffer_size, model.replay_buffer = c.buffer_size, None
    model.num_timesteps, model._total_timesteps = agent.num_timesteps, c.n_timesteps
    model.exploration_rate = agent.exploration_rate()
    setattr(model, ENV_KEY, agent.env_id)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return out


def _spaces_env(observation_space, action_space):
    """An env with just the spaces SB3's constructor reads (no emulator is started)."""
    import gymnasium as gym

    class Spaces(gym.Env):
        metadata: dict[str, Any] = {"render_modes": []}

        def __init__(self):
            self.observation_space, self.action_space = observation_space, action_space

        def reset(self, *, seed=None, options=None):
            return observation_space.sample(), {}

        def step(self, action):
            return observation_space.sample(), 0.0, True, False, {}

    return Spaces()
