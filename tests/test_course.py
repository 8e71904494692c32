"""The Deep RL course's and RL-Zoo's files like-for-like: the Double DQN note, --zoo-compatible, push --epsilon,
the card through huggingface_hub's ModelCard, the course's names for tabular envs, --from a Hub repo offline."""

import json
from pathlib import Path

from huggingface_hub import ModelCard

from qzoo.cli import main

DATA = Path(__file__).parent / "data"


def test_a_course_dqn_yml_says_qzoo_runs_double_dqn_and_zoo_compatible_gives_sb3s_dqn(capsys):
    argv = ["train", "--env", "SpaceInvadersNoFrameskip-v4", "-c", str(DATA / "hf_course_dqn.yml"), "--dry-run", "--json"]
    assert main(argv[:-1]) == 0
    assert "qzoo runs Double DQN by default" in capsys.readouterr().err
    assert main([*argv, "--zoo-compatible"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["double_q"], config["precision"]) == (False, "float32")
    assert main([*argv, "--zoo-compatible", "--set", "double_q=true"]) == 0  # --set still wins
    assert json.loads(capsys.readouterr().out)["config"]["double_q"] is True


def test_push_card_is_huggingface_hubs_with_the_course_name_and_the_stated_epsilon(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--algo", "qlearning", "--env", "FrozenLake-v1", "--env-kwargs", "is_slippery=false", "-n",
                 "2000", "--run-dir", str(run), "--no-progress", "--set", "eval_freq=0"]) == 0
    out = tmp_path / "hub"
    assert main(["push", str(run), "--out", str(out), "--no-video", "--episodes", "5", "--epsilon", "0.1"]) == 0
    card = ModelCard.load(out / "README.md")
    assert "q-learning" in card.data.tags and "FrozenLake-v1-4x4-no_slippery" in card.data.tags
    index = card.data.to_dict()["model-index"][0]["results"][0]
    results = json.loads((out / "results.json").read_text())
    assert index["dataset"]["name"] == "FrozenLake-v1-4x4-no_slippery"
    assert index["metrics"][0]["type"] == "mean_reward"
    assert index["metrics"][0]["value"] == f"{results['mean']:.2f} +/- {results['std']:.2f}"
    assert results["epsilon"] == 0.1 and "epsilon 0.1" in card.text


def test_from_a_hub_repo_offline_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert main(["train", "--from", "someone/some-agent", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the Hub cannot be reached and it is not in the local cache" in err
