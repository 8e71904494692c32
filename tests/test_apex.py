"""Ape-X's pure parts without Ray (qzoo.apex): epsilons, chunks, the learner's ingest, the rate limiter, the actor."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qzoo.apex import Actor, ChunkBuilder, RateLimiter, actor_epsilon, ingest, weights_of
from qzoo.buffer import ReplayBuffer
from qzoo.cli import main
from qzoo.config import DQNConfig
from synthetic import frame_steps

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_ape_x_epsilons_follow_horgan_2018():
    # eps_i = 0.4 ** (1 + 7 i / (N - 1)), worked out by hand for N = 2 and N = 8.
    assert actor_epsilon(0, 2) == pytest.approx(0.4) and actor_epsilon(1, 2) == pytest.approx(0.4**8)
    eight = [actor_epsilon(i, 8) for i in range(8)]
    assert eight == pytest.approx([0.4 ** (1 + i) for i in range(8)])
    assert eight == sorted(eight, reverse=True)
    with pytest.raises(ValueError):
        actor_epsilon(0, 1)


# ------------------------------------------------------------------------------------ chunk ingest

lane_strategy = st.lists(st.tuples(st.integers(1, 9), st.booleans()), min_size=1, max_size=8)


def stream(lane: int, episodes: list[tuple[int, bool]], stack: int) -> list[tuple]:
    """One actor's transitions as ``ReplayBuffer.add`` takes them (``synthetic.frame_steps``); lanes' frames differ."""
    return [(obs, value % 5, float(value % 7) - 3.0, next_obs, terminated, truncated)
            for obs, next_obs, terminated, truncated, value in frame_steps(episodes, stack, 1000 * (lane + 1))]


def memory_state(buffer: ReplayBuffer) -> dict:
    numbers, arrays = buffer.state()
    return {"numbers": numbers, "arrays": arrays, "last_row": list(buffer._last_row),
            "priorities": None if buffer.tree is None else buffer.tree.get(np.arange(buffer.capacity))}


def assert_same_memory(a: ReplayBuffer, b: ReplayBuffer) -> None:
    sa, sb = memory_state(a), memory_state(b)
    assert sa["numbers"] == sb["numbers"] and sa["last_row"] == sb["last_row"]
    assert sa["arrays"].keys() == sb["arrays"].keys()
    for name in sa["arrays"]:
        np.testing.assert_array_equal(sa["arrays"][name], sb["arrays"][name], err_msg=name)
    if sa["priorities"] is not None:
        np.testing.assert_array_equal(sa["priorities"], sb["priorities"])


def make_memory(capacity: int, stack: int, lanes: int, n_step: int, prioritized: bool) -> ReplayBuffer:
    obs_shape = (stack, 2, 2) if stack > 1 else (2, 2)
    return ReplayBuffer(capacity, obs_shape, np.int32, stack=stack, n_envs=lanes, seed=0, n_step=n_step,
                        prioritized=prioritized)


@FAST
@given(stack=st.integers(1, 4), n_step=st.integers(1, 3), prioritized=st.booleans(), capacity=st.integers(10, 40),
       actors=st.lists(st.lists(lane_strategy, min_size=1, max_size=3), min_size=1, max_size=3),
       chunk_steps=st.integers(1, 7), data=st.data())
def test_chunk_ingest_gives_the_arrays_links_and_priorities_of_the_same_add_calls(
        stack, n_step, prioritized, capacity, actors, chunk_steps, data):
    """Actors with several env copies each (``n_envs``; here the same count for all): a chunk interleaves its
    copies' transitions, and ingest stores copy k of actor i in stream i * n_envs + k."""
    n_envs = max(len(copies) for copies in actors)
    lanes = [i * n_envs + k for i, copies in enumerate(actors) for k in range(len(copies))]
    streams = {lane: stream(lane, episodes, stack)
               for lane, episodes in zip(lanes, [e for copies in actors for e in copies])}
    capacity = max(capacity, n_step * n_envs * len(actors) + 1)
    direct = make_memory(capacity, stack, n_envs * len(actors), n_step, prioritized)
    chunked = make_memory(capacity, stack, n_envs * len(actors), n_step, prioritized)
    builders = [ChunkBuilder(stack, n_envs) for _ in actors]
    positions = dict.fromkeys(lanes, 0)
    obs_shape = (stack, 2, 2) if stack > 1 else (2, 2)
    while any(positions[lane] < len(streams[lane]) for lane in lanes):
        # The learner ingests whichever actor's chunk arrives next; inside it, the actor's copies in any order.
        actor = data.draw(st.sampled_from(sorted({lane // n_envs for lane in lanes
                                                  if positions[lane] < len(streams[lane])})))
        for _ in range(chunk_steps):
            left = [lane for lane in lanes if lane // n_envs == actor and positions[lane] < len(streams[lane])]
            if not left:
                break
            lane = data.draw(st.sampled_from(left))
            transition = streams[lane][positions[lane]]
            positions[lane] += 1
            direct.add(*transition, env_index=lane)  # what the actor's own add calls would store
            builders[actor].add(*transition, copy=lane % n_envs)
        chunk = builders[actor].take(obs_shape, np.int32)
        assert chunk.next_frames.shape == (chunk.steps, 2, 2)  # one new frame per step, never a stack
        assert len(chunk.reset_obs) == int(chunk.starts.sum())
        assert ingest(chunked, chunk, actor * n_envs) == 0
    assert_same_memory(direct, chunked)
    if len(direct) and (n_step == 1 or (direct._usable(np.arange(len(direct)))).any()):
        for x, y in zip(direct.sample(16), chunked.sample(16)):
            np.testing.assert_array_equal(x, y)


@FAST
@given(stack=st.integers(1, 3), n_step=st.integers(2, 3), prioritized=st.booleans(), cut=st.integers(1, 6),
       after=lane_strategy)
def test_a_restarted_actor_closes_its_stream_as_truncated(stack, n_step, prioritized, cut, after):
    """An actor dies mid-episode and Ray restarts it: the memory is what the same adds with the last transition
    truncated give (its n-step windows stop there and bootstrap; nothing links across the restart)."""
    obs_shape = (stack, 2, 2) if stack > 1 else (2, 2)
    before = stream(0, [(cut + 3, False)], stack)[:cut]  # the episode is cut after `cut` steps
    fresh = stream(1, after, stack)
    direct, chunked = (make_memory(60, stack, 2, n_step, prioritized) for _ in range(2))
    for i, transition in enumerate(before):
        obs, action, reward, next_obs, terminated, _ = transition
        direct.add(obs, action, reward, next_obs, terminated, i == cut - 1, env_index=1)
    for transition in fresh:
        direct.add(*transition, env_index=1)
    old, new = ChunkBuilder(stack), ChunkBuilder(stack)
    for transition in before:
        old.add(*transition)
    for transition in fresh:
        new.add(*transition)
    assert ingest(chunked, old.take(obs_shape, np.int32), 1) == 0
    assert ingest(chunked, new.take(obs_shape, np.int32), 1) == 1  # the cut is noticed
    assert_same_memory(direct, chunked)


def test_a_restarted_actor_closes_the_streams_of_all_its_copies():
    """Actor 1 of 2 with two copies died: streams 2 and 3 are closed as truncated, actor 0's stream 0 goes on."""
    from qzoo.distributed import end_streams

    memory = make_memory(40, 1, 4, 3, True)
    for lane in (0, 2, 3):
        for transition in stream(lane, [(5, False)], 1)[:3]:  # every stream inside an episode
            memory.add(*transition, env_index=lane)
    last_rows = [memory._last_row[s] for s in (2, 3)]
    assert end_streams(memory, 1, 2) == 2 and end_streams(memory, 1, 2) == 0
    assert [memory.stream_at_start(s) for s in range(4)] == [False, True, True, True]
    assert memory.truncated[last_rows].all() and memory.truncated.sum() == 2
    assert memory._waiting[2] == memory._waiting[3] == [] and len(memory._waiting[0]) == 2


def test_a_run_resumed_with_another_actor_count_restripes_the_learners_memory_and_ape_x_epsilons_follow():
    """``--resume RUN --set actors=3`` after 2 actors with 2 copies each (``distributed.change_actors``, no Ray):
    the 4 saved streams end as truncations, the memory goes on with 6, the new actors' chunks fill them without a
    cut, lane i acts with eps_i of 3, and the memory restores (checkpoint) into a learner built for 3 actors."""
    from qzoo.distributed import change_actors
    from qzoo.dqn import DQN
    from qzoo.errors import QzooError

    config = DQNConfig(net_arch=(32, 32), torch_threads=1, seed=5, actors=2, n_envs=2, vec_env="sync",
                       buffer_size=500, n_step=3, prioritized_replay=True, learning_starts=50)
    learner = DQN("CartPole-v1", config)
    for i in range(2):
        assert ingest(learner.buffer, Actor("CartPole-v1", config, i, 2).collect(41), 2 * i) == 0
    open_rows = [learner.buffer._last_row[s] for s in range(4) if not learner.buffer.stream_at_start(s)]
    assert open_rows  # some episodes were cut by the resume

    note = change_actors(learner, 3)
    assert note.startswith("actors 2 -> 3") and learner.config.actors == 3 and learner.buffer.n_envs == 6
    assert learner.buffer.truncated[open_rows].all()
    for i in range(3):
        actor = Actor("CartPole-v1", learner.config, i, 3)
        chunk = actor.collect(20)
        assert chunk.epsilon == pytest.approx(actor_epsilon(i, 3)) and ingest(learner.buffer, chunk, 2 * i) == 0
    assert len(learner.train_steps(3)) == 3

    restored = DQN("CartPole-v1", learner.config)
    restored.buffer.restore(*learner.buffer.state())
    assert_same_memory(learner.buffer, restored.buffer)
    with pytest.raises(QzooError, match="distributed run"):
        change_actors(learner, 0)


# ------------------------------------------------------------------------------------ rate limiter


def run_limiter(produce_per_tick: int, learn_per_tick: int, ticks: int = 400):
    """A producer and a learner at fixed speeds under one limiter: ratio 0.5, learning_starts 100, band 64."""
    limiter = RateLimiter(0.5, 100, 64)
    inserts = updates = producer_waits = learner_waits = 0
    worst_ahead = worst_behind = 0.0
    for _ in range(ticks):
        if limiter.may_insert(inserts, updates):
            inserts += produce_per_tick
        else:
            producer_waits += 1
        n = min(learn_per_tick, limiter.updates_allowed(inserts, updates))
        learner_waits += n < learn_per_tick
        updates += n
        worst_ahead = max(worst_ahead, updates - limiter.target(inserts))
        worst_behind = max(worst_behind, limiter.target(inserts) - updates)
    return limiter, inserts, updates, producer_waits, learner_waits, worst_ahead, worst_behind


def test_the_rate_limiter_holds_a_fast_producer_back():
    limiter, inserts, updates, producer_waits, _, ahead, behind = run_limiter(produce_per_tick=50, learn_per_tick=5)
    assert producer_waits > 300  # the actors waited most of the time for the slow learner
    # Behind by at most the band plus one chunk's share; never ahead of the band.
    assert behind <= 0.5 * (64 + 50) and ahead <= 0.5 * 64 + 1
    assert abs(updates / (inserts - 100) - 0.5) < 0.05


def test_the_rate_limiter_holds_a_fast_learner_back():
    limiter, inserts, updates, producer_waits, learner_waits, ahead, behind = run_limiter(
        produce_per_tick=4, learn_per_tick=1000)
    assert producer_waits == 0 and learner_waits == 400  # the learner waited for data at every tick
    assert ahead <= 0.5 * 64 + 1 and behind <= 0.5 * 4
    assert abs(updates / (inserts - 100) - 0.5) < 0.05
    assert limiter.updates_allowed(100, 0) == 0  # nothing before learning_starts


def test_the_rate_limiter_owes_the_single_process_count_at_the_end():
    limiter = RateLimiter(128 / 256, 1000, 256)
    assert limiter.updates_owed(50_000, 0) == 24_500 and limiter.updates_owed(50_000, 24_500) == 0


# ------------------------------------------------------------------------------------------ actor

ACTOR_CONFIG = DQNConfig(net_arch=(32, 32), torch_threads=1, seed=5, n_timesteps=1000, exploration_fraction=0.5)


def test_an_actor_sends_new_frames_and_real_scores_and_acts_with_the_published_weights():
    actor = Actor("CartPole-v1", ACTOR_CONFIG, index=1, n_actors=2)
    assert actor.epsilon(0, 1000) == pytest.approx(0.4**8)
    chunk = actor.collect(300)
    assert chunk.steps == 300 and chunk.next_frames.shape == (300, 4) and chunk.starts[0]
    assert len(chunk.reset_obs) == chunk.starts.sum() == (chunk.terminated | chunk.truncated)[:-1].sum() + 1
    assert chunk.episode_lengths.sum() == np.flatnonzero(chunk.terminated | chunk.truncated)[-1] + 1
    np.testing.assert_array_equal(chunk.episode_returns, chunk.episode_lengths)  # CartPole: +1 per step
    assert not actor.collect(10).starts[0] or chunk.terminated[-1] or chunk.truncated[-1]  # the stream goes on

    learner = Actor("CartPole-v1", DQNConfig(net_arch=(32, 32), torch_threads=1, seed=99), index=0, n_actors=2)
    obs = np.linspace(-1, 1, 4, dtype=np.float32)
    actor.set_weights(weights_of(learner.agent.q_net))
    np.testing.assert_allclose(actor.agent.q_values(obs), learner.agent.q_values(obs))


def test_an_actor_with_two_env_copies_sends_exactly_the_steps_asked_and_each_copy_is_its_own_stream():
    """n_envs 2: chunks of an odd size (a vector step's second transition waits for the next chunk); ingested into
    streams 2 and 3 (actor 1 of 2), they give the memory that the same actor's transitions added directly give."""
    config = DQNConfig(net_arch=(32, 32), torch_threads=1, seed=5, n_envs=2, vec_env="sync", n_step=3,
                       prioritized_replay=True)
    chunked_actor, direct_actor = (Actor("CartPole-v1", config, index=1, n_actors=2) for _ in range(2))
    chunked, direct = (ReplayBuffer(400, (4,), np.float32, n_envs=4, seed=0, n_step=3, prioritized=True)
                       for _ in range(2))
    seen_copies, games = set(), 0
    for steps in (7, 64, 1, 100):
        chunk = chunked_actor.collect(steps)
        assert chunk.steps == steps and chunk.epsilon == pytest.approx(0.4**8)
        seen_copies |= set(chunk.copies.tolist())
        games += len(chunk.episode_returns)
        ingest(chunked, chunk, 2)
        for _ in range(steps):
            copy, transition, _ = next(direct_actor._transitions)
            direct.add(*transition, env_index=2 + copy)
    assert seen_copies == {0, 1} and games >= 2 and chunked_actor.env_steps == 172
    assert all(chunked.stream_at_start(s) for s in (0, 1))  # the other actor's streams are untouched
    assert_same_memory(direct, chunked)


def test_one_actor_follows_qzoos_epsilon_schedule_on_the_runs_env_steps():
    actor = Actor("CartPole-v1", ACTOR_CONFIG, index=0, n_actors=1)
    assert actor.epsilon(0, 1000) == 1.0 and actor.epsilon(250, 1000) == pytest.approx(1.0 - 0.95 / 2)
    assert actor.collect(20, run_step=600, horizon=1000).epsilon == pytest.approx(0.05)


# ---------------------------------------------------------------------------------- without Ray


def test_plain_qzoo_never_imports_ray():
    code = ("import sys, qzoo, qzoo.cli, qzoo.training, qzoo.dqn, qzoo.apex, qzoo.distributed; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_actors_without_ray_installed_is_one_line_saying_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main(["train", "--env", "CartPole-v1", "--set", "actors=2", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["qzoo: error: actors > 0 trains on Ray, which is not installed: "
                                 "pip install 'qzoo[ray]'"]
    assert not (tmp_path / "run").exists()


def test_deterministic_distributed_runs_are_refused_in_one_line(capsys):
    code = main(["train", "--env", "CartPole-v1", "--set", "actors=2", "--deterministic", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not bit-exact" in err[0]


def test_regression_chunks_of_a_lane_ingested_out_of_order_are_refused_not_stored_as_nan_frames():
    """Bug: a lane's second chunk reached the learner's node before its first and was ingested first; ``add`` then
    stored the missing first observation (None) as a NaN frame and the loss became NaN. The learner now ingests
    each lane's chunks in the order it asked for them, and ingest refuses a chunk that continues an unseen episode."""
    builder, transitions, chunks = ChunkBuilder(1), stream(0, [(6, False)], 1), []
    for part in (transitions[:2], transitions[2:4]):  # two chunks of one episode
        for transition in part:
            builder.add(*transition)
        chunks.append(builder.take((2, 2), np.int32))
    first, second = chunks
    memory = make_memory(20, 1, 1, 1, False)
    with pytest.raises(ValueError, match="out of order"):
        ingest(memory, second, 0)
    assert not ingest(memory, first, 0) and not ingest(memory, second, 0) and len(memory) == 4
    assert np.isfinite(memory.frames.data[:memory.frames_written]).all()
