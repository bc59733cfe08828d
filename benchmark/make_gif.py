"""A short GIF for a README from the mp4 that `--run` writes (a GIF plays inline on GitHub, an mp4 does not).

Takes --seconds of the video from --start, keeps every --every-th frame (the GIF then plays at the video's
speed, with fewer frames), shrinks it by --scale, and writes it with Pillow (which matplotlib, already
required, installs; opencv cannot write GIFs).

Usage:
    python ppo_atari.py --run runs/ppo_breakout_2M/ppo_atari.model --run-episodes 1
    python benchmark/make_gif.py videos/ppo_atari.mp4 benchmark/results/ppo_breakout.gif --seconds 20
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("video", help="an mp4 written by --run")
    parser.add_argument("gif", help="the GIF to write")
    parser.add_argument("--start", type=float, default=0.0, help="seconds into the video where the GIF begins")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the GIF in seconds of video")
    parser.add_argument("--every", type=int, default=2, help="keep one frame in this many")
    parser.add_argument("--scale", type=float, default=0.5, help="size of the GIF relative to the video")
    args = parser.parse_args()
    if args.every < 1 or args.seconds <= 0 or not 0 < args.scale <= 1 or args.start < 0:
        sys.exit("error: need --every >= 1, --seconds > 0, 0 < --scale <= 1 and --start >= 0")

    import cv2
    from PIL import Image

    if not os.path.isfile(args.video):
        sys.exit(f"error: video '{args.video}' does not exist (write one with --run MODEL)")
    capture = cv2.VideoCapture(args.video)
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not capture.isOpened() or fps <= 0:
        sys.exit(f"error: cannot decode '{args.video}' as a video")
    first, count = round(args.start * fps), round(args.seconds * fps)
    frames, index = [], 0
    while index < first + count:
        ok, frame = capture.read()
        if not ok:
            break
        if index >= first and (index - first) % args.every == 0:
            height, width = frame.shape[:2]
            small = cv2.resize(frame, (round(width * args.scale), round(height * args.scale)),
                               interpolation=cv2.INTER_AREA)
            frames.append(Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB)))
        index += 1
    capture.release()
    if not frames:
        sys.exit(f"error: '{args.video}' has no frames after {args.start} s")
    # An adaptive palette per frame keeps the game's colours; GIF frame times are in whole milliseconds.
    frames = [f.quantize(colors=64, method=Image.Quantize.MEDIANCUT) for f in frames]
    os.makedirs(os.path.dirname(os.path.abspath(args.gif)), exist_ok=True)
    frames[0].save(args.gif, save_all=True, append_images=frames[1:], loop=0,
                   duration=round(1000 * args.every / fps), optimize=True)
    print(f"{args.gif}: {len(frames)} frames, {frames[0].width}x{frames[0].height}, "
          f"{len(frames) * args.every / fps:.1f} s, {os.path.getsize(args.gif) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
