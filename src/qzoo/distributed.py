"""Ape-X-style distributed training on Ray core (Horgan et al. 2018): N actor processes, one learner here.

``training.Run.learn`` calls ``learn`` instead of ``DQN.learn`` when ``config.actors > 0``, so the run folder,
checkpoints, evaluations and every command that reads a run folder work unchanged. Ray is imported only here,
only on that path (the ``ray`` extra); ``qzoo.apex`` holds the parts that need no Ray.

    actors (Ray actors, 1 CPU, 1 torch thread each)        learner (this process: the agent)
      act eps_i-greedily in n_envs envs     --chunk-->      ingest into their own streams of the replay memory
      fetch weights when the version changed <--ray.put--   gradient steps under the rate limiter,
                                                            target update, evaluation, checkpoints

The learner asks each actor for chunks (``Host.collect``), at most ``max_chunks_in_flight`` each, so an actor
computes its next chunk while the learner ingests the last one and waits when the learner is behind
(``apex.RateLimiter``). It asks for exactly the env steps left, so a run stops at ``n_timesteps`` env steps
summed over actors and their env copies, and every interval (``learning_starts``, ``train_freq``'s ratio, ``target_update_interval``,
``eval_freq``, ``checkpoint_freq``, ``log_interval``) counts those summed env steps. Weights are published with
one ``ray.put`` every ``weight_publish_seconds`` (or ``weight_publish_updates`` gradient steps); each request
carries the newest version and its reference in a list, which Ray does not resolve, so an actor fetches the
weights only when the version changed. Sampling stays in the learner: no minibatch crosses the network.
Each lane's chunks are ingested in the order they were asked for (a later one can arrive first from another
node). Actor ``i``'s copy ``k`` fills replay stream ``i * n_envs + k``. A dead actor is restarted by Ray
(``actor_max_restarts``); its lost chunks are asked again, its streams are closed as truncated
(``ReplayBuffer.end_stream``) and run.json lists the restart.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import threading
import time
from typing import Any

import numpy as np

from qzoo import apex
from qzoo.errors import QzooError
from qzoo.periodic import PeriodicWork, crossings

LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-machine mode, on loopback
INSTALL_HINT = "actors > 0 trains on Ray, which is not installed: pip install 'qzoo[ray]'"


def require_ray() -> Any:
    """The ray module, or one QzooError line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise QzooError(INSTALL_HINT) from None
    return ray


class Host:
    """What each Ray actor process runs: an ``apex.Actor`` and the version of the weights it acts with."""

    def __init__(self, env_id: str, config_values: dict[str, Any], index: int, n_actors: int):
        import torch

        from qzoo import config as cfg

        torch.set_num_threads(1)  # one CPU per actor (Horgan et al. 2018: one core each)
        self.actor = apex.Actor(env_id, cfg.build(config_values, "actor"), index, n_actors)
        self.version = -1

    def collect(self, steps: int, run_step: int, horizon: int, version: int, weights: list) -> apex.Chunk:
        """A chunk of ``steps`` env steps, acting with published version ``version`` (fetched if new)."""
        import ray

        if version != self.version:
            self.actor.set_weights(ray.get(weights[0]))
            self.version = version
        chunk = self.actor.collect(steps, run_step, horizon)
        chunk.weights_version = version
        chunk.node_id = ray.get_runtime_context().get_node_id()
        return chunk

    def pid(self) -> int:
        return os.getpid()


def connect(ray: Any, address: str | None, n_actors: int, cpus: int | None = None) -> bool:
    """Join the Ray the caller already started, the cluster at ``address`` (``auto``: the one this machine
    belongs to), or start a throwaway local Ray on 127.0.0.1 without dashboard, with ``cpus`` CPUs (default: every
    core, at least one per actor); True when started here."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        return True
    # Security: a local Ray listens on loopback only, without dashboard (a Ray port reachable from the network runs
    # anyone's code). Ray takes the routable address on Linux even when given 127.0.0.1 (ray 2.60:
    # services.resolve_ip_for_localhost) unless its cluster mode is off, as it is by default on macOS and Windows.
    from ray._private import ray_constants

    cluster_mode, variable = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(LOCAL_ONLY_VARIABLE)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[LOCAL_ONLY_VARIABLE] = "0"  # for the processes Ray starts
    try:
        ray.init(num_cpus=cpus or max(n_actors, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _node_ip_address="127.0.0.1")
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
        if variable is None:
            os.environ.pop(LOCAL_ONLY_VARIABLE, None)
        else:
            os.environ[LOCAL_ONLY_VARIABLE] = variable
    return True


@contextlib.contextmanager
def keeping_signal_handlers():
    """Put back the SIGINT and SIGTERM handlers (``RunRecorder.stopping_on_signals``') that the block replaced."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


class _Publisher:
    """The learner's weights in the object store: one ``ray.put`` per publication, a version number for each."""

    def __init__(self, ray: Any, agent: Any):
        self.ray, self.agent, self.version = ray, agent, -1
        self.publish()

    def publish(self) -> None:
        self.ref = self.ray.put(apex.weights_of(self.agent.q_net))
        self.version += 1
        self.at, self.updates_at = time.monotonic(), self.agent.num_updates

    def maybe_publish(self) -> None:
        c = self.agent.config
        due = time.monotonic() - self.at >= c.weight_publish_seconds
        due |= bool(c.weight_publish_updates) and self.agent.num_updates - self.updates_at >= c.weight_publish_updates
        if due and self.agent.num_updates != self.updates_at:
            self.publish()


def learn(agent: Any, total_timesteps: int | None = None, recorder: Any = None, address: str | None = None,
          stats: dict[str, Any] | None = None) -> Any:
    """Train ``agent`` (a DQN) for ``total_timesteps`` env steps summed over ``config.actors`` Ray actors.

    ``stats`` (optional) is filled with what the run saw: chunks per lane, the weight versions and nodes each
    lane acted with, actor restarts, publications.
    """
    ray = require_ray()
    c = agent.config
    horizon = agent.num_timesteps + (c.n_timesteps if total_timesteps is None else total_timesteps)
    agent.horizon = horizon
    with keeping_signal_handlers():  # ray.init installs its own: SIGINT / SIGTERM must still checkpoint the run
        started_here = connect(ray, address, c.actors)
    remote = ray.remote(num_cpus=1, max_restarts=c.actor_max_restarts)(Host)
    actors = [remote.remote(agent.env_id, c.to_dict(), i, c.actors) for i in range(c.actors)]
    try:
        # Every actor built (env, network) before the first chunk is asked for: the lanes start together, and an
        # actor that cannot start fails the run here with its own error.
        ray.get([actor.pid.remote() for actor in actors])
        return _learn(ray, agent, actors, horizon, recorder, {} if stats is None else stats)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if started_here:
            ray.shutdown()


def _learn(ray: Any, agent: Any, actors: list, horizon: int, recorder: Any, stats: dict[str, Any]) -> Any:
    c = agent.config
    phase = c.train_freq if c.gradient_steps == -1 else c.gradient_steps  # gradient steps per training phase
    limiter = apex.RateLimiter(phase / c.train_freq, c.learning_starts, c.rate_band)
    publisher = _Publisher(ray, agent)
    periodic = PeriodicWork(agent, recorder, agent._pending_losses)
    losses = agent._pending_losses
    epsilons = [apex.actor_epsilon(i, c.actors) if c.actors > 1 else c.exploration_initial_eps
                for i in range(c.actors)]
    stats.update(chunks=[0] * c.actors, versions=[[] for _ in range(c.actors)],
                 nodes=[set() for _ in range(c.actors)], restarts=0, cut_streams=0)
    pending: dict[Any, tuple[int, int]] = {}  # chunk reference -> (lane, env steps asked for)
    # Each lane's chunks in the order they were asked for: a lane's stream is ingested in order, although a later
    # chunk can reach this node first (a chunk taken out of order would link transitions of different moments).
    queues: list[collections.deque] = [collections.deque() for _ in range(c.actors)]
    dead, deaths = [False] * c.actors, [0] * c.actors  # a lane's chunks failed since its last delivery; its deaths
    requested = agent.num_timesteps  # env steps asked of the actors, delivered or not

    stopped = False
    while True:
        for lane in range(c.actors):  # ask for more while the learner keeps up (actors wait otherwise)
            while (len(queues[lane]) < c.max_chunks_in_flight and requested < horizon
                   and limiter.may_insert(agent.num_timesteps, agent.num_updates)):
                steps = min(c.actor_chunk_steps, horizon - requested)
                ref = actors[lane].collect.remote(steps, requested, horizon, publisher.version, [publisher.ref])
                pending[ref] = (lane, steps)
                queues[lane].append(ref)
                requested += steps
        if not pending and requested >= horizon:
            break
        allowed = limiter.updates_allowed(agent.num_timesteps, agent.num_updates)
        # Nothing to train on: wait for a chunk. Else only look: the learner trains while chunks are on their way.
        oldest = [queue[0] for queue in queues if queue]
        ready = ray.wait(oldest, num_returns=1, timeout=0 if allowed else None)[0] if oldest else []
        if ready:
            ref = ready[0]
            lane, steps = pending.pop(ref)
            queues[lane].popleft()
            try:
                chunk = ray.get(ref)
            except ray.exceptions.RayActorError:
                # The actor died; Ray restarts it (max_restarts) with fresh envs. Its chunks are asked again; its
                # copies' streams are closed as truncated now: the chunks before this one were ingested (in order),
                # so each stream's newest row is where its episode was cut.
                requested -= steps
                if not dead[lane]:  # one death fails every chunk it had in flight: count it once
                    dead[lane] = True
                    deaths[lane] += 1
                    if deaths[lane] > c.actor_max_restarts:
                        raise QzooError(f"actor {lane} died {deaths[lane]} times (actor_max_restarts "
                                        f"{c.actor_max_restarts}); its last error: {_first_line(ray, ref)}") from None
                    stats["restarts"] += 1
                    stats["cut_streams"] += end_streams(agent.buffer, lane, c.n_envs)
                    if recorder is not None:
                        recorder.on_actor_restart(agent, lane)
                continue
            dead[lane] = False
            # Store (s, a, r, s') in D, in this actor's streams (a resumed run's saved streams are closed here).
            stats["cut_streams"] += apex.ingest(agent.buffer, chunk, lane * c.n_envs)
            stats["chunks"][lane] += 1
            stats["versions"][lane].append(chunk.weights_version)
            stats["nodes"][lane].add(chunk.node_id)
            epsilons[lane] = chunk.epsilon
            agent.num_timesteps += chunk.steps
            for episode_return, length in zip(chunk.episode_returns.tolist(), chunk.episode_lengths.tolist()):
                agent._end_episode(recorder, episode_return, length)
            passed = crossings(agent.num_timesteps, chunk.steps, c.target_update_interval)
            for _ in range(min(passed, 1) if c.tau == 1.0 else passed):  # a copy twice is one copy
                agent.update_target()  # Q_target <- Q every C env steps (summed over actors)
            if periodic.after_env_step(float(np.mean(epsilons)), chunk.steps):
                stopped = True
                break
        # Gradient steps on minibatches sampled from D, one training phase at a time, within the limiter's band.
        n = min(limiter.updates_allowed(agent.num_timesteps, agent.num_updates), max(phase, 32))
        if n and agent.num_timesteps > c.learning_starts:
            losses.extend(agent.train_steps(n))
            publisher.maybe_publish()
    # The last chunks' gradient steps: the single-process count at the horizon.
    owed = limiter.updates_owed(agent.num_timesteps, agent.num_updates)
    if owed and not stopped:
        losses.extend(agent.train_steps(owed))
    stats["publications"] = publisher.version + 1
    if recorder is not None:
        recorder.on_distributed(agent, summary(stats))
    return agent


def change_actors(agent: Any, actors: int) -> str:
    """A resumed distributed run goes on with ``actors`` actors instead of its saved count (``qzoo train --resume RUN
    --set actors=N``); the note for run.json.

    The replay memory was saved with ``actors * n_envs`` streams: each is closed as truncated (its unfinished n-step
    windows bootstrap at its newest row, as after an actor restart) and the memory goes on with the new count
    (``ReplayBuffer.restripe``); its rows are kept. Lane i of N then acts with Ape-X's eps_i of the new N (a lone
    actor: qzoo's schedule), as a run started with N actors would.
    """
    from qzoo import config as cfg

    before = agent.config.actors
    if before < 1 or actors < 1:
        raise QzooError(f"--resume --set actors=N changes the actor count of a distributed run (actors >= 1), "
                        f"not {before} to {actors}")
    buffer = agent.buffer  # restored with the saved stream count
    agent.config = cfg.replace(agent.config, "--set", actors=actors)
    try:
        buffer.restripe(agent.config.n_envs * actors)
    except ValueError as exc:
        raise QzooError(f"--set actors={actors}: {exc}") from None
    return f"actors {before} -> {actors}: the replay memory's {before * agent.config.n_envs} streams closed as " \
           f"truncated, {actors * agent.config.n_envs} from here"


def end_streams(buffer: Any, lane: int, n_envs: int) -> int:
    """Close lane ``lane``'s replay streams (one per env copy) that are inside an episode, as truncated; how many."""
    streams = [s for s in range(lane * n_envs, (lane + 1) * n_envs) if not buffer.stream_at_start(s)]
    for stream in streams:
        buffer.end_stream(stream)
    return len(streams)


def _first_line(ray: Any, ref: Any) -> str:
    try:
        ray.get(ref)
    except Exception as exc:  # the actor's error, as Ray reports it
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return "none"


def summary(stats: dict[str, Any]) -> dict[str, Any]:
    """run.json's record of a distributed run: per lane, its chunks, nodes and the weight versions it acted with."""
    lanes = [{"chunks": n, "nodes": sorted(nodes), "first_version": versions[0] if versions else None,
              "newest_version": max(versions) if versions else None, "versions": len(set(versions))}
             for n, nodes, versions in zip(stats["chunks"], stats["nodes"], stats["versions"])]
    return {"actors": len(lanes), "lanes": lanes, "restarts": stats["restarts"], "cut_streams": stats["cut_streams"],
            "publications": stats["publications"]}
