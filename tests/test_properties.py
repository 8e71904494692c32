"""Property-based tests (hypothesis): the config loader and the replay memory's invariants."""

import dataclasses
import json

import numpy as np
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qzoo import config as cfg
from qzoo.buffer import ReplayBuffer
from qzoo.errors import QzooError
from synthetic import frame_steps

FAST = settings(max_examples=60, deadline=None)

# ------------------------------------------------------------------------------------------- config


def valid_value(field: dataclasses.Field) -> st.SearchStrategy:
    """Values of the field's kind, inside every range that qzoo's configs check."""
    kind, choices = field.metadata["kind"], field.metadata["choices"]
    strategies = {
        "int": st.integers(1, 10**6),
        "float": st.floats(0.001, 1.0),
        "float?": st.none() | st.floats(-1e3, 1e3),
        "bool": st.booleans(),
        "str": st.sampled_from(choices) if choices else st.text(max_size=5),
        "ints?": st.none() | st.lists(st.integers(1, 512), min_size=4, max_size=4),
        "dict": st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=6), st.integers() | st.booleans(), max_size=3),
    }
    return strategies[kind]


# Fields whose checked range is narrower than the kind's (upper bounds against crafted files, issue 14).
BOUNDED = {"torch_threads": st.integers(0, cfg.MAX_TORCH_THREADS), "n_envs": st.integers(1, cfg.MAX_N_ENVS)}


def valid_configs(schema: type) -> st.SearchStrategy:
    fields = dataclasses.fields(schema)
    return st.fixed_dictionaries({}, optional={f.name: BOUNDED[f.name] if f.name in BOUNDED else valid_value(f)
                                               for f in fields})


@FAST
@given(schema=st.sampled_from([cfg.DQNConfig, cfg.QLearningConfig]), data=st.data())
def test_valid_hyperparameters_round_trip_through_the_saved_yaml(schema, data):
    values = data.draw(valid_configs(schema))
    if values.get("deterministic"):  # its own rules, tested in test_config and test_apex
        assume(values.get("device") != "cuda" and values.get("torch_threads", 0) >= 1 and not values.get("actors"))
    config = cfg.build(values, "test", schema)
    for name, value in values.items():
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(config, name) == expected
    # config.yml as a run folder saves it, read back as `qzoo train -c` reads it.
    text = yaml.safe_dump({"CartPole-v1": config.to_dict()})
    reloaded = cfg.build(cfg.parse_yaml(text, "config.yml")["CartPole-v1"], "config.yml", schema)
    assert reloaded == config


EDGE_VALUES = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300, 10**40, -1, 0, "", "1e-4", [], {}])
ANY_VALUE = st.recursive(
    EDGE_VALUES | st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3),
    max_leaves=8,
)


@FAST
@given(schema=st.sampled_from([cfg.DQNConfig, cfg.QLearningConfig]), data=st.data())
def test_any_mapping_builds_a_config_or_raises_qzoo_error_and_nothing_else(schema, data):
    names = [f.name for f in dataclasses.fields(schema)]
    values = data.draw(st.dictionaries(st.sampled_from(names), ANY_VALUE, max_size=3))
    if data.draw(st.booleans()):  # sometimes a key that is not a hyperparameter
        values[data.draw(st.text(max_size=12) | st.integers())] = data.draw(ANY_VALUE)
    try:
        config = cfg.build(values, "test", schema)
    except QzooError as exc:
        assert "\n" not in str(exc)  # one line for the user
    else:
        assert set(values) <= set(names) and isinstance(config, schema)


@FAST
@given(text=st.text(max_size=40))
def test_any_set_value_parses_or_raises_qzoo_error(text):
    try:
        values = cfg.parse_assignments([f"batch_size={text}"], "--set")
        cfg.build(values, "--set")
    except QzooError:
        pass


# ------------------------------------------------------------------------------------------- replay


def play(buffer: ReplayBuffer, episodes: list[tuple[int, bool]], stack: int) -> dict[int, tuple]:
    """Feed ``buffer`` as the training loop does (``synthetic.frame_steps``).

    Returns, per transition id (stored as the action), the (obs, next_obs, terminated, truncated) the
    env really showed: with ``stack`` > 1, a FrameStack whose first stack repeats the first frame.
    """
    shown = {}
    for ids, (obs, next_obs, terminated, truncated, _) in enumerate(frame_steps(episodes, stack)):
        buffer.add(obs, ids, float(ids), next_obs, terminated, truncated)
        shown[ids] = (obs, next_obs, terminated, truncated)
    return shown


episodes_strategy = st.lists(st.tuples(st.integers(1, 12), st.booleans()), min_size=1, max_size=25)


@FAST
@given(capacity=st.integers(1, 40), stack=st.integers(1, 4), episodes=episodes_strategy, seed=st.integers(0, 99))
def test_every_sample_is_what_the_env_showed_and_only_from_the_newest_transitions(capacity, stack, episodes, seed):
    obs_shape = (stack, 2, 2) if stack > 1 else (2, 2)
    buffer = ReplayBuffer(capacity, obs_shape, np.int32, stack=stack, seed=seed)
    shown = play(buffer, episodes, stack)
    total = len(shown)
    assert len(buffer) == min(capacity, total)
    batch = buffer.sample(64)
    for i, transition_id in enumerate(batch.actions):
        obs, next_obs, terminated, truncated = shown[int(transition_id)]
        # Equal to the env's stacks: so a stack never mixes episodes, nor holds an overwritten frame.
        np.testing.assert_array_equal(batch.obs[i], obs)
        np.testing.assert_array_equal(batch.next_obs[i], next_obs)
        assert batch.rewards[i] == float(transition_id)
        assert (batch.terminated[i], batch.truncated[i]) == (terminated, truncated)
        assert total - capacity <= transition_id < total


@FAST
@given(capacity=st.integers(1, 30), stack=st.integers(1, 4), episodes=episodes_strategy, more=episodes_strategy)
def test_a_restored_memory_samples_and_grows_exactly_like_the_original(capacity, stack, episodes, more):
    obs_shape = (stack, 2, 2) if stack > 1 else (2, 2)
    original = ReplayBuffer(capacity, obs_shape, np.int32, stack=stack, seed=7)
    play(original, episodes[:-1], stack)
    numbers, arrays = original.state()
    restored = ReplayBuffer(capacity, obs_shape, np.int32, stack=stack, seed=12345)
    restored.restore(json.loads(json.dumps(numbers)), {k: np.array(v) for k, v in arrays.items()})
    for buffer in (original, restored):  # both go on with the same episodes
        play(buffer, more, stack)
    if len(original):
        a, b = original.sample(32), restored.sample(32)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
