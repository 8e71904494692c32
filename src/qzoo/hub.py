"""``qzoo push``: a Hugging Face Hub-ready folder for a trained agent, and taking such a folder back.

The folder holds the model file, the resolved ``config.yml``, ``results.json`` (a fresh evaluation),
a replay video and a ``README.md`` model card whose ``model-index`` metadata is what the Hub's
leaderboards read (the Deep RL course's leaderboard reads ``mean_reward`` as "mean +/- std").
``qzoo evaluate`` and ``qzoo train --from`` accept the folder as they accept a run folder.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

import yaml

from qzoo.errors import QzooError
from qzoo.evaluation import EvalStats

ALGO_NAMES = {"dqn": "DQN", "qlearning": "Q-Learning"}


def course_env_name(env_id: str, env_kwargs: dict[str, Any] | None) -> str:
    """The env's name as the Deep RL course's push_to_hub writes it: ``FrozenLake-v1-4x4-no_slippery``
    (the map name, then ``no_slippery`` when ``is_slippery`` is false); other envs keep their id."""
    from qzoo.envs import env_spec

    kwargs = {**(env_spec(env_id).kwargs or {}), **(env_kwargs or {})}
    name = env_id
    if kwargs.get("map_name"):
        name += f"-{kwargs['map_name']}"
    if kwargs.get("is_slippery", True) is False:
        name += "-no_slippery"
    return name


def model_card(env_id: str, algo: str, stats: EvalStats, config: dict[str, Any], repo_id: str | None,
               video: str | None, epsilon: float | None = None) -> str:
    """README.md: front matter from huggingface_hub's own ``ModelCardData`` / ``EvalResult`` (the ``model-index``
    the leaderboards read: metric ``mean_reward``, value "mean +/- std"), then a short usage section. Tabular
    agents are named as the course names them (``course_env_name``, tag ``q-learning``)."""
    from huggingface_hub import EvalResult, ModelCardData

    name = ALGO_NAMES.get(algo, algo)
    tabular = algo == "qlearning"
    dataset = course_env_name(env_id, config.get("env_kwargs")) if tabular else env_id
    tags = [dataset, "q-learning", "reinforcement-learning", "custom-implementation", "qzoo"] if tabular else \
        [env_id, "reinforcement-learning", "deep-reinforcement-learning", "qzoo", algo]
    metadata = ModelCardData(library_name="qzoo", tags=tags, model_name=name, eval_results=[EvalResult(
        task_type="reinforcement-learning", task_name="reinforcement-learning", dataset_type=dataset,
        dataset_name=dataset, metric_type="mean_reward", metric_name="mean_reward",
        metric_value=f"{stats.mean:.2f} +/- {stats.std:.2f}", verified=False)])
    policy = f"epsilon-greedy with epsilon {epsilon:g}" if epsilon is not None else "greedy"
    where = repo_id or "<this folder>"
    hyperparameters = "\n".join(f"| {k} | {v} |" for k, v in config.items())
    replay = f"\n![replay]({video})\n" if video else ""
    body = f"""# {name} agent playing {env_id}

A {name} agent trained with [qzoo](https://pypi.org/project/qzoo/) on `{env_id}`.
Evaluation: mean return {stats.mean:.2f} +/- {stats.std:.2f} over {len(stats.returns)} episodes
(result = mean - std = {stats.result:.2f}), playing {policy} (`qzoo push --epsilon`).
{replay}
## Use

```
qzoo evaluate {where} --episodes 10
qzoo train --from {where}        # keep training from these weights
```

## Hyperparameters

| name | value |
|---|---|
{hyperparameters}
"""
    return "---\n" + metadata.to_yaml() + "\n---\n\n" + body


def parse_model_card(text: str) -> dict[str, Any]:
    """The YAML front matter of a model card."""
    if not text.startswith("---\n"):
        raise QzooError("model card has no YAML front matter")
    front, sep, _ = text[4:].partition("\n---\n")
    if not sep:
        raise QzooError("model card front matter is not closed")
    return yaml.safe_load(front)


def build_folder(agent, model_path: Path, out: Path, episodes: int, seed: int, video: bool,
                 repo_id: str | None = None, epsilon: float | None = None) -> dict[str, Any]:
    """Write the Hub folder for ``agent`` (loaded from ``model_path``) into a new or empty ``out``; the card's
    evaluation plays with ``epsilon`` (default: the agent's ``eval_epsilon``), which the card states."""
    from qzoo.runs import MODEL_FILE, write_config

    if out.exists() and any(out.iterdir()):
        raise QzooError(f"{out} is not empty; give --out a new folder")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, out / (MODEL_FILE + agent.file_suffix))
    write_config(out / "config.yml", agent.env_id, agent.config.to_dict())
    epsilon = agent.config.eval_epsilon if epsilon is None else epsilon
    stats = agent.evaluate(episodes, seed=seed, epsilon=epsilon)
    results = {"env_id": agent.env_id, "algo": agent.algo, "seed": seed, "steps": agent.num_timesteps,
               "epsilon": epsilon, **stats.to_dict()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    video_name = None
    if video:
        from qzoo.video import record

        record(agent, out / "replay.mp4", episodes=1, seed=seed, epsilon=epsilon)
        video_name = "replay.mp4"
    (out / "README.md").write_text(model_card(agent.env_id, agent.algo, stats, agent.config.to_dict(), repo_id,
                                              video_name, epsilon))
    return {"folder": str(out), **results}


def find_token(token: str | None) -> str | None:
    """The Hugging Face token, as the course logs in: ``--token``, else ``HF_TOKEN``, else the login cached by
    ``huggingface-cli login`` / ``notebook_login()`` (``huggingface_hub.get_token`` reads both of the last two)."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


# Every network call ends: a server that accepts and never answers must not hold a command forever.
TIMEOUT_ENV_VAR = "QZOO_NETWORK_TIMEOUT"
DEFAULT_TIMEOUT = 300.0  # seconds for a whole upload or download; --network-timeout or $QZOO_NETWORK_TIMEOUT


def network_timeout(given: float | None = None) -> float:
    """The time limit of a network call, in seconds: ``given``, else ``$QZOO_NETWORK_TIMEOUT``, else 300."""
    value: object = given if given is not None else os.environ.get(TIMEOUT_ENV_VAR) or DEFAULT_TIMEOUT
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except ValueError:
        raise QzooError(f"the network timeout must be a number of seconds, got {value!r}") from None
    if not 0 < seconds < float("inf"):
        raise QzooError(f"the network timeout must be > 0 seconds, got {value!r}")
    return seconds


def with_timeout(call: Callable[[], Any], seconds: float, what: str) -> Any:
    """``call()`` in a daemon thread, given up after ``seconds``: a QzooError naming ``what``. The library calls
    (huggingface_hub over HTTP) have no overall limit of their own; the abandoned thread dies with the process."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name=f"qzoo {what}")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s (--network-timeout, ${TIMEOUT_ENV_VAR})")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def upload(folder: Path, repo_id: str, token: str, timeout: float | None = None) -> str:
    """Create the Hub repository if needed and upload the folder; returns its URL. A failed upload leaves
    ``folder`` as it is and says where it is, so it can be uploaded again or by hand. ``timeout``: seconds for
    the whole upload (``network_timeout``)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    seconds = network_timeout(timeout)

    def send() -> None:
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload qzoo agent")

    try:
        with_timeout(send, seconds, f"upload to {repo_id}")
    except Exception as exc:  # network, permission, name, time limit: all one line for the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise QzooError(f"upload to {repo_id} failed ({reason}); the prepared folder is kept in {folder}") from None
    return f"https://huggingface.co/{repo_id}"


def fetch(source: str, timeout: float | None = None) -> Path:
    """A local run folder, Hub folder or model file as is; otherwise a Hub repo id, downloaded within ``timeout``
    seconds (``network_timeout``). A path that looks local (``./x``, ``/x``, ``~/x``, a model file's suffix, or
    ``runs/typo`` where ``runs`` is a folder here) and does not exist is an error, never a download."""
    path = Path(source)
    if path.exists():
        return path
    looks_local = (source.count("/") != 1 or source.startswith((".", "/", "~")) or path.suffix in (".pt", ".npz", ".zip")
                   or Path(source.split("/")[0]).is_dir())
    if looks_local:
        raise QzooError(f"not found: {source} (neither a local path nor a Hub repo id like user/name)")
    from huggingface_hub import snapshot_download

    seconds = network_timeout(timeout)
    try:
        return Path(with_timeout(lambda: snapshot_download(repo_id=source), seconds, f"download of {source}"))
    except Exception as exc:
        reason = f": {exc}" if isinstance(exc, TimeoutError) else ""
        if type(exc).__name__ in OFFLINE_ERRORS:  # no network, HF_HUB_OFFLINE, and the repo not in the cache
            raise QzooError(f"cannot download {source}: the Hub cannot be reached and it is not in the local cache "
                            f"({type(exc).__name__}); connect, or pass a local folder or model file") from None
        raise QzooError(f"cannot download {source} from the Hub: {type(exc).__name__}{reason}") from None


# What huggingface_hub raises when it cannot reach the Hub and the files are not cached (told apart by name:
# their modules moved between huggingface_hub versions).
OFFLINE_ERRORS = ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "ConnectTimeout",
                  "ConnectError")
