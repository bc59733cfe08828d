"""benchmark/make_gif.py: the README's GIF from a --run video."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmark", "make_gif.py")


def test_gif_takes_the_asked_stretch_at_the_asked_size(tmp_path):
    import cv2
    from PIL import Image

    # 40 frames at 15 fps, frame i filled with grey level 6 * i so each frame can be recognised.
    video = str(tmp_path / "v.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 15, (80, 60))
    for i in range(40):
        writer.write(np.full((60, 80, 3), 6 * i, dtype=np.uint8))
    writer.release()

    gif = tmp_path / "out" / "g.gif"
    result = subprocess.run([sys.executable, SCRIPT, video, str(gif), "--start", "1", "--seconds", "1",
                             "--every", "3", "--scale", "0.5"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    image = Image.open(gif)
    assert image.size == (40, 30)
    levels = []
    for n in range(image.n_frames):
        image.seek(n)
        levels.append(float(np.asarray(image.convert("L")).mean()))
        assert image.info["duration"] == 200  # 3 frames of 1/15 s
    # Frames 15, 18, ..., 27 of the video: one second from the first second, one in three.
    assert np.allclose(levels, [6 * i for i in range(15, 30, 3)], atol=4)


def test_missing_video_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "none.mp4"), str(tmp_path / "g.gif")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
