"""Exact resume: a checkpoint folder holds everything a run needs to go on as if it had never stopped.

Layout, one folder per checkpoint inside the run folder (N = the env step, 12 digits):

    checkpoints/step-N/
        model.pt | model.npz   the agent as ``save(with_training_state=True)`` writes it: online and target
                               networks, optimizer, counters (a Q-table for tabular runs); pickle-free,
                               so ``qzoo evaluate RUN/checkpoints/step-N/model.pt`` reads it as any model
        state.json             format and versions; the agent's schedule position, its numpy generators,
                               the replay memory's positions; Python's, numpy's and torch's global random
                               states; the run folder's own state (CSV sizes, best evaluation, elapsed time)
        <name>.npy             arrays: the replay memory's rings (filled part only), the current observation
        env.pkl                the training env with its wrappers (pickle: see ``dump_env``)
        manifest.json          the size and sha256 of every file above, and their HMAC-SHA256 under this user's
                               checkpoint key (``user_key``); written last

Writing goes to ``checkpoints/.step-N.tmp/``: every file is fsynced, then the manifest, then the folder,
which is renamed to ``step-N`` (atomic) before the parent folder is fsynced. Only then are older
checkpoints deleted. A kill at any moment leaves the previous checkpoint or the new one complete;
``latest`` takes the newest ``step-*`` folder and never a ``.tmp`` one. A full disk while writing removes
the half-written folder and is reported as one line; the previous checkpoint is untouched.

Reading checks the format, every file's size and sha256 before anything in the run folder changes,
so a truncated, corrupt or foreign checkpoint is one clear error.

Trust: ``env.pkl`` is a pickle, and unpickling runs code. So the manifest (which holds every file's sha256) is
signed with HMAC-SHA256 under a per-user key kept outside every run folder (``~/.config/qzoo/checkpoint.key``,
made 0600 on first use; ``QZOO_CHECKPOINT_KEY`` names another file). Resume verifies the signature before it
reads anything else: a checkpoint this user did not write (a shared drive, an archive, the Hub) or one whose files
were changed is refused, unless the user says they trust it (``--trust-checkpoint``). Every file name read from
a checkpoint is a plain name inside its folder (``confined``).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import pickle
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qzoo import __version__
from qzoo.errors import QzooError
from qzoo.files import fsync_dir

CHECKPOINT_FORMAT = 1
PREFIX = "step-"
MANIFEST = "manifest.json"
STATE = "state.json"
ENV_FILE = "env.pkl"
# Test hook: seconds to sleep after the files are written and before the rename, so that a test can
# kill the process in the middle of a checkpoint write. Never set outside tests.
PAUSE_ENV_VAR = "QZOO_TEST_CHECKPOINT_PAUSE"
KEY_ENV_VAR = "QZOO_CHECKPOINT_KEY"  # the path of the key file, instead of ~/.config/qzoo/checkpoint.key


# ------------------------------------------------------------------------------------ the user's key


def key_path() -> Path:
    """Where this user's checkpoint key lives: ``$QZOO_CHECKPOINT_KEY``, else ``$XDG_CONFIG_HOME/qzoo`` or
    ``~/.config/qzoo``, ``checkpoint.key``. Never inside a run folder: a folder must not vouch for itself."""
    if os.environ.get(KEY_ENV_VAR):
        return Path(os.environ[KEY_ENV_VAR]).expanduser()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "qzoo" / "checkpoint.key"


def user_key() -> bytes:
    """This user's 32-byte checkpoint key, made (mode 0600, atomically: two first runs agree) on first use."""
    path = key_path()
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(32).hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if another process made the key first: then theirs is the key
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise QzooError(f"cannot read or create the checkpoint key {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(key) < 16:
        raise QzooError(f"the checkpoint key {path} is too short; delete it to make a new one")
    return key


def _signature(key: bytes, manifest: dict[str, Any]) -> str:
    """HMAC-SHA256 of the manifest's format, step and files (each file's size and sha256)."""
    body = {k: manifest.get(k) for k in ("format", "step", "files")}
    return hmac.new(key, json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------------------- env state


class _EnvPickler(pickle.Pickler):
    """Pickles a wrapper stack whole; an ALE emulator becomes its cloned state (RNG included).

    Gymnasium wrappers and classic-control envs pickle with their state (episode counters, frame
    stacks, ``np_random``). ALE's ``AtariEnv`` does not: it pickles as its constructor arguments, so a
    plain pickle would restart the game. Here it is stored as ``cloneState(include_rng=True)`` (the
    emulator, and the RNG of sticky actions) plus its python-side generator and action space.
    """

    def persistent_id(self, obj: Any) -> Any:
        from ale_py.env import AtariEnv

        if isinstance(obj, AtariEnv):
            return ("ale", obj.ale.cloneState(include_rng=True), obj._np_random, obj.action_space)
        return None


class _EnvUnpickler(pickle.Unpickler):
    """The inverse of ``_EnvPickler``: ALE state is restored into a freshly made env of the same config."""

    def __init__(self, file: io.BytesIO, fresh_env: Any):
        super().__init__(file)
        self.fresh_env = fresh_env

    def persistent_load(self, pid: Any) -> Any:
        kind, ale_state, np_random, action_space = pid
        if kind != "ale":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        atari = self.fresh_env.unwrapped
        atari.ale.restoreState(ale_state)
        atari._np_random, atari.action_space = np_random, action_space
        return atari


def dump_env(env: Any) -> bytes:
    """The complete state of a training env, wrappers included (see ``_EnvPickler``)."""
    buffer = io.BytesIO()
    _EnvPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(env)
    return buffer.getvalue()


def load_env(data: bytes, fresh_env: Any) -> Any:
    """Rebuild ``dump_env``'s env; ``fresh_env`` (made from the same config) lends its ALE emulator."""
    return _EnvUnpickler(io.BytesIO(data), fresh_env).load()


# -------------------------------------------------------------------------------- global random states


def global_rng_states() -> dict[str, Any]:
    """Python's, numpy's legacy and torch's process-wide random states, JSON-ready."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    states = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state().numpy().tobytes().hex(),
    }
    if torch.cuda.is_available():
        states["torch_cuda"] = [s.numpy().tobytes().hex() for s in torch.cuda.get_rng_state_all()]
    return states


def set_global_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.from_numpy(np.frombuffer(bytes.fromhex(states["torch"]), dtype=np.uint8).copy()))
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.from_numpy(np.frombuffer(bytes.fromhex(s), dtype=np.uint8).copy()) for s in states["torch_cuda"]]
        )


# ------------------------------------------------------------------------------------------- writing


def _sha256(path: Path, fsync: bool = False) -> str:
    """A file's sha256, read in 16 MB chunks; ``fsync``: also flush it to the disk."""
    digest = hashlib.sha256()
    with open(path, "rb+" if fsync else "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
        if fsync:
            os.fsync(f.fileno())
    return digest.hexdigest()


def _seal(path: Path) -> dict[str, Any]:
    """fsync a written file and return its manifest entry (size, sha256)."""
    digest = _sha256(path, fsync=True)
    return {"size": path.stat().st_size, "sha256": digest}


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n")


def folder_name(step: int) -> str:
    return f"{PREFIX}{step:012d}"


def write(checkpoints: Path, agent: Any, run_state: dict[str, Any]) -> Path:
    """Write a checkpoint of ``agent`` at its current env step; returns its folder.

    ``agent`` provides ``save(path, with_training_state=True)``, ``resume_state()`` (JSON-ready numbers
    and named arrays) and ``env``; ``run_state`` is the run folder's own state (see ``RunRecorder``).
    A failed write (full disk, ...) leaves no trace and raises ``QzooError``.
    """
    step = agent.num_timesteps
    final = checkpoints / folder_name(step)
    if final.is_dir():
        return final  # this step is already saved (a signal arrived right after a periodic checkpoint)
    tmp = checkpoints / f".{final.name}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a killed write
        tmp.mkdir(parents=True)
        model_file = "model" + agent.file_suffix
        agent.save(tmp / model_file, with_training_state=True)
        numbers, arrays = agent.resume_state()
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)  # a contiguous view is written without a copy
        (tmp / ENV_FILE).write_bytes(dump_env(agent.env))
        _write_json(tmp / STATE, {
            "format": CHECKPOINT_FORMAT, "qzoo": __version__, "algo": agent.algo, "env_id": agent.env_id,
            "step": step, "model_file": model_file, "arrays": sorted(arrays), "agent": numbers,
            "rng": global_rng_states(), "run": run_state,
        })
        manifest = {p.name: _seal(p) for p in sorted(tmp.iterdir())}
        pause = float(os.environ.get(PAUSE_ENV_VAR, "0") or 0)
        if pause:
            time.sleep(pause)
        signed = {"format": CHECKPOINT_FORMAT, "step": step, "files": manifest}
        _write_json(tmp / MANIFEST, {**signed, "hmac": _signature(user_key(), signed)})
        _seal(tmp / MANIFEST)
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(checkpoints)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest(checkpoints)
        kept = f"; the checkpoint of env step {step_of(previous)} is intact" if previous else ""
        raise QzooError(f"cannot write the checkpoint of env step {step} in {checkpoints}: "
                        f"{write_error(exc)}{kept}") from None
    for old in [*checkpoints.glob(f"{PREFIX}*"), *checkpoints.glob(f".{PREFIX}*.tmp")]:
        if old != final and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final


def write_error(exc: BaseException) -> str:
    """The OS's words for a failed write (``No space left on device``), also under torch's RuntimeError."""
    for error in (exc, exc.__context__, exc.__cause__):
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# ------------------------------------------------------------------------------------------- reading


def step_of(folder: Path) -> int:
    return int(folder.name[len(PREFIX):])


def latest(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint folder, or None. ``.tmp`` folders are never complete."""
    folders = [p for p in checkpoints.glob(f"{PREFIX}*") if p.is_dir() and p.name[len(PREFIX):].isdigit()]
    return max(folders, key=step_of) if folders else None


@dataclass(frozen=True)
class Checkpoint:
    """A checked checkpoint folder: every file present, of the right size and sha256."""

    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def model_file(self) -> Path:
        return self.path / self.state["model_file"]

    def arrays(self) -> dict[str, np.ndarray]:
        """The saved arrays, memory-mapped: loading a replay memory copies it once, into its rings."""
        return {name: np.load(self.path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                for name in self.state["arrays"]}

    def env_bytes(self) -> bytes:
        return (self.path / ENV_FILE).read_bytes()


def read(folder: Path, trust: bool = False) -> Checkpoint:
    """Check a checkpoint folder completely; any problem is one ``QzooError`` line.

    Unless ``trust``, the manifest's signature must be this user's (``user_key``): a checkpoint written by
    anyone else, or altered since, is refused before any of its files is read."""
    damaged = f"checkpoint {folder} is damaged"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise QzooError(f"{damaged}: {MANIFEST} is missing") from None
    except (OSError, ValueError) as exc:
        raise QzooError(f"{damaged}: {MANIFEST} is unreadable ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise QzooError(f"checkpoint {folder} has format {found}; this qzoo ({__version__}) reads format "
                        f"{CHECKPOINT_FORMAT}")
    if not trust and not hmac.compare_digest(str(manifest.get("hmac", "")), _signature(user_key(), manifest)):
        raise QzooError(f"checkpoint {folder} was not written by this user (its signature does not match the key "
                        f"{key_path()}); its env.pkl is a pickle, which runs code when loaded: resume it only if "
                        "you trust where it came from, with --trust-checkpoint")
    files = manifest.get("files")
    if not isinstance(files, dict) or STATE not in files:
        raise QzooError(f"{damaged}: {MANIFEST} lists no {STATE}")
    for name, entry in files.items():
        path = confined(folder, name)
        if not isinstance(entry, dict):
            raise QzooError(f"{damaged}: {MANIFEST} has no size and sha256 for {name}")
        if not path.is_file():
            raise QzooError(f"{damaged}: {name} is missing")
        size = path.stat().st_size
        if size != entry.get("size"):
            raise QzooError(f"{damaged}: {name} is truncated or altered ({size} bytes, {entry.get('size')} expected)")
        if _sha256(path) != entry.get("sha256"):
            raise QzooError(f"{damaged}: {name} does not match its sha256 (corrupt)")
    try:
        state = json.loads((folder / STATE).read_text())
    except ValueError:
        raise QzooError(f"{damaged}: {STATE} is not JSON") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        state = state if isinstance(state, dict) else {}
        raise QzooError(f"checkpoint {folder} has format {state.get('format')}; this qzoo ({__version__}) reads "
                        f"format {CHECKPOINT_FORMAT}")
    # Every name it gives is a file of this folder, listed in the manifest (so checked above): nothing outside.
    names = [state.get("model_file"), ENV_FILE, *[f"{a}.npy" for a in state.get("arrays") or []]]
    for name in names:
        if not isinstance(name, str) or confined(folder, name) is None or name not in files:
            raise QzooError(f"{damaged}: {STATE} names {name!r}, which its manifest does not list")
    return Checkpoint(folder, state)


def confined(folder: Path, name: Any) -> Path:
    """``folder / name`` for a plain file name read from an untrusted file; anything else (an absolute path,
    ``..``, a subfolder, a non-string) is one QzooError: a crafted checkpoint touches nothing outside its folder."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise QzooError(f"checkpoint {folder} is damaged or crafted: it names {name!r}, not a file of its folder")
    return folder / name


def read_latest(run_dir: Path, trust: bool = False) -> Checkpoint:
    """The newest checkpoint of a run folder, checked; a clear error where there is none."""
    if not run_dir.is_dir():
        raise QzooError(f"run folder not found: {run_dir}")
    folder = latest(run_dir / "checkpoints")
    if folder is None:
        raise QzooError(f"{run_dir} holds no checkpoint to resume from (checkpoints/{PREFIX}*): "
                        "the run stopped before its first checkpoint_freq env steps")
    return read(folder, trust)


def restore(agent_class: Any, checkpoint: Checkpoint) -> Any:
    """An agent exactly as it was when ``checkpoint`` was written: weights, optimizer, replay memory,
    counters, schedule position, env and every random state."""
    state = checkpoint.state
    try:
        agent = agent_class.load(checkpoint.model_file)
        agent.restore_resume_state(state["agent"], checkpoint.arrays())
        agent.env = load_env(checkpoint.env_bytes(), agent.env)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError, pickle.UnpicklingError, AttributeError,
            EOFError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise QzooError(f"checkpoint {checkpoint.path} does not fit this qzoo: {reason}") from None
    # Last: building the agent above drew from the global generators (network initialisation).
    set_global_rng_states(state["rng"])
    return agent
