"""Strict config loading: unknown keys, wrong types, 1e-4, presets, RL-Zoo files, no eval."""

from pathlib import Path

import pytest

from qzoo import config as cfg
from qzoo.errors import QzooError

DATA = Path(__file__).parent / "data"


def test_unknown_key_names_the_valid_ones_and_the_closest():
    with pytest.raises(QzooError) as err:
        cfg.validate({"learning_rat": 0.1}, "test")
    message = str(err.value)
    assert "'learning_rat'" in message and "did you mean 'learning_rate'" in message
    assert "buffer_size" in message and "target_update_interval" in message


@pytest.mark.parametrize(
    "key, value",
    [("learning_rate", "fast"), ("batch_size", 1.5), ("double_q", "yes"), ("net_arch", [64, "x"]),
     ("loss", "l1"), ("train_freq", True), ("env_kwargs", [1])],
)
def test_wrong_types_are_errors(key, value):
    with pytest.raises(QzooError, match=key):
        cfg.validate({key: value}, "test")


def test_out_of_range_values_are_errors():
    with pytest.raises(QzooError, match="gamma"):
        cfg.build({"gamma": 1.5})


def test_scientific_notation_is_a_float_everywhere(tmp_path):
    assert cfg.parse_value("1e-4") == pytest.approx(1e-4)
    assert isinstance(cfg.parse_value("1e-4"), float)
    assert cfg.parse_assignments(["learning_rate=3e-4", "net_arch=[32, 32]"], "--set") == {
        "learning_rate": pytest.approx(3e-4), "net_arch": [32, 32]}
    path = tmp_path / "flat.yml"
    path.write_text("learning_rate: 1e-4\nbuffer_size: 5e4\n")
    config, _ = cfg.resolve("CartPole-v1", None, str(path))
    assert config.learning_rate == pytest.approx(1e-4)
    assert config.buffer_size == 50_000 and isinstance(config.buffer_size, int)


def test_rlzoo_course_file_loads_and_reports_what_it_ignores():
    config, notes = cfg.resolve("SpaceInvadersNoFrameskip-v4", "atari", str(DATA / "hf_course_dqn.yml"))
    assert config.n_timesteps == 1_000_000
    assert config.learning_rate == pytest.approx(1e-4)
    assert config.exploration_final_eps == pytest.approx(0.01)
    assert config.network == "cnn" and config.frame_stack == 4
    assert any("env_wrapper" in n for n in notes)
    assert any("optimize_memory_usage" in n for n in notes)


def test_rlzoo_policy_kwargs_are_read_without_eval():
    config, _ = cfg.resolve("CartPole-v1", None, str(DATA / "hf_course_dqn.yml"))
    assert config.net_arch == (256, 256)
    with pytest.raises(QzooError, match="policy_kwargs"):
        cfg.translate_rlzoo({"policy_kwargs": "dict(net_arch=__import__('os').getcwd())"}, "test")


def test_presets_layer_env_on_family_on_defaults():
    config, notes = cfg.resolve("SpaceInvadersNoFrameskip-v4", "atari")
    assert config.n_timesteps == 1_000_000  # SpaceInvaders' own entry
    assert config.target_update_interval == 1000  # from the atari family
    assert config.max_grad_norm == cfg.DQNConfig().max_grad_norm  # a default
    assert notes[:2] == ["preset: atari", "preset: SpaceInvadersNoFrameskip-v4"]
    pong, _ = cfg.resolve("PongNoFrameskip-v4", "atari")
    assert pong.learning_starts == 100_000


def test_overrides_come_last():
    config, _ = cfg.resolve("CartPole-v1", None, overrides={"learning_rate": 0.5}, env_kwargs={"sutton_barto_reward": True})
    assert config.learning_rate == 0.5
    assert config.batch_size == 64  # still the preset's
    assert config.env_kwargs == {"sutton_barto_reward": True}


def test_malformed_yaml_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("learning_rate: [1, 2\nbatch_size: 3\n")
    with pytest.raises(QzooError, match="malformed YAML"):
        cfg.resolve("CartPole-v1", None, str(path))


def test_every_builtin_preset_is_valid():
    for key, values in cfg.builtin_presets().items():
        translated, _ = cfg.translate_rlzoo(values, key)
        cfg.build(cfg.validate(translated, key))
