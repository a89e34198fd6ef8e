"""A synthetic 1280x720 clip for the video benchmarks: one fixed random frame scrolled 4 pixels a frame (the content
does not change the speed; the motion keeps every frame different).

    python benchmarks/make_clip.py clip.mp4 200
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the .mp4 to write")
    parser.add_argument("frames", type=int)
    args = parser.parse_args()

    import cv2
    import numpy as np

    from dart.io import atomic_path

    base = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    with atomic_path(args.output) as tmp:  # the temporary file keeps the suffix OpenCV picks the container by
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 30, (1280, 720))
        for i in range(args.frames):
            writer.write(np.roll(base, 4 * i, axis=1))
        writer.release()


if __name__ == "__main__":
    main()
