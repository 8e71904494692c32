"""``qzoo record``: videos of full evaluation episodes in the game's own colour frames.

Frames come from ``env.render()`` of an evaluation env (``render_mode="rgb_array"``), which returns
the emulator's or simulator's full picture whatever observation wrappers the run used: for Atari the
210x160 colour screen, not the 84x84 grayscale stack the network sees. Frames that are not video bytes are
made so by ``video_frame``: MinAtar renders its 10x10 grid as floats in [0, 1]. The encoder is the ffmpeg
binary shipped inside the ``imageio-ffmpeg`` wheel. The episodes are ``evaluation.play_episodes``'s, the loop
``qzoo evaluate`` and ``qzoo enjoy`` use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from qzoo.errors import QzooError
from qzoo.evaluation import play_episodes


MIN_VIDEO_SIDE = 160  # pixels: a smaller picture (MinAtar's 10x10 grid) is enlarged to at least this


def video_frame(frame: np.ndarray) -> np.ndarray:
    """An RGB frame as a video encoder takes it: uint8, and at least ``MIN_VIDEO_SIDE`` pixels on its short side.

    Floats are read as intensities in [0, 1]. Small pictures are enlarged by a whole factor, each cell a block
    of equal pixels (no smoothing: a grid game stays a grid).
    """
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    factor = -(-MIN_VIDEO_SIDE // min(frame.shape[:2]))  # ceiling division
    if factor > 1:
        frame = np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1)
    return frame


def _checked_epsilon(agent, epsilon: float | None, max_steps: int) -> float:
    """The run's ``eval_epsilon`` unless ``epsilon`` is given; bad values are one-line errors before any file exists."""
    eps = agent.config.eval_epsilon if epsilon is None else epsilon
    if not 0 <= eps <= 1:
        raise QzooError(f"--epsilon must be in [0, 1], got {eps}")
    if max_steps < 1:
        raise QzooError(f"--max-steps must be >= 1, got {max_steps}")
    return eps


def play(agent, episodes: int, seed: int, max_steps: int, on_frame: Callable[[np.ndarray], None],
         epsilon: float | None = None) -> list[float]:
    """Play evaluation episodes through ``play_episodes``, handing every frame (each first one too) to ``on_frame``.

    Episode i starts from seed + i and ``epsilon`` defaults to the run's ``eval_epsilon``, as in ``qzoo evaluate``:
    the same seed and epsilon play the same episodes. ``max_steps`` caps env steps over all episodes; an episode
    it cuts keeps its partial return. Returns the episode returns.
    """
    eps = _checked_epsilon(agent, epsilon, max_steps)
    env = agent.make_env(training=False, render_mode="rgb_array")
    try:
        if "rgb_array" not in (env.metadata.get("render_modes") or []):
            raise QzooError(f"{agent.env_id} cannot render frames (rgb_array)")
        stats = play_episodes(agent.greedy_action, env, episodes, seed, eps,
                              on_step=lambda event: on_frame(event.env.render()), max_steps=max_steps)
    finally:
        env.close()
    return list(stats.returns)


def record(agent, path: Path, episodes: int = 1, seed: int = 0, fps: int = 30, max_steps: int = 100_000,
           gif: Path | None = None, epsilon: float | None = None) -> dict:
    """Write an mp4 (and optionally a GIF) of ``episodes`` episodes; returns frame count and returns."""
    import imageio.v2 as imageio

    _checked_epsilon(agent, epsilon, max_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    gif_frames: list[np.ndarray] = []
    seen = {"frames": 0, "shape": (0, 0)}
    # x264 needs even sizes: macro_block_size=2 pads an odd one by a pixel instead of rescaling to 16s.
    writer = imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=2,
                                ffmpeg_log_level="error")

    def on_frame(frame: np.ndarray) -> None:
        frame = video_frame(frame)
        writer.append_data(frame)
        seen["frames"] += 1
        seen["shape"] = frame.shape[:2]
        if gif is not None:
            gif_frames.append(frame)

    try:
        returns = play(agent, episodes, seed, max_steps, on_frame, epsilon)
    finally:
        writer.close()
    tmp.replace(path)  # a video half-written by a crash never takes the final name
    if gif is not None:
        imageio.mimsave(gif, gif_frames, duration=1000 / fps, loop=0)
    height, width = seen["shape"]
    return {"video": str(path), "gif": str(gif) if gif else None, "frames": seen["frames"],
            "width": width, "height": height, "returns": returns}


def count_frames(path: Path) -> tuple[int, tuple[int, ...]]:
    """Decode a video: (number of frames, shape of a frame)."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(path)
    try:
        n, shape = 0, ()
        for frame in reader:
            n += 1
            shape = frame.shape
    finally:
        reader.close()
    return n, shape
