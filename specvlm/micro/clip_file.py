"""A held-out clip of the embedded micro pair written as a video file, with its question and
answer: something to send to ``specvlm serve micro`` (docs/serving.md) or ``specvlm demo
--video``.

``python -m specvlm.micro.clip_file clip.mp4 [--clip N] [--frames 8]`` writes the file (MPEG-4 at a
near-lossless bit rate, 64x64, 8 frames per second; PyAV) and prints the question and its
correct answer (the target answers 87% of held-out questions right).
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np


def write_video(path, frames, fps: int = 8) -> None:
    """``frames`` (an array ``(frames, height, width, 3)`` or any iterable of ``(height, width,
    3)`` frames, uint8 RGB; each is encoded as it comes) as an MPEG-4 file at ``path``."""
    import av

    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("a video needs at least one frame")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = first.shape[1], first.shape[0], "yuv420p"
        stream.bit_rate = 20_000_000  # nearly lossless: colours and grey levels survive
        for frame in itertools.chain([first], frames):
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def held_out_question(clip: int, frames: int) -> tuple[np.ndarray, str, str]:
    """The ``clip``-th held-out example (cycling through the question types): video, question,
    answer."""
    from specvlm.micro.clips import QUESTION_TYPES
    from specvlm.micro.data import held_out_example

    qtype = QUESTION_TYPES[clip % len(QUESTION_TYPES)]
    _, _, video, question, answer = held_out_example(qtype, clip // len(QUESTION_TYPES), frames)
    return video, question, answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specvlm.micro.clip_file", description=__doc__)
    parser.add_argument("out", help="the video file to write (.mp4)")
    parser.add_argument("--clip", type=int, default=0, help="which held-out example (0)")
    parser.add_argument("--frames", type=int, default=8, help="frames (8: 129 video tokens)")
    args = parser.parse_args(argv)
    if args.clip < 0 or args.frames < 1:
        parser.error("--clip must be >= 0 and --frames >= 1")
    try:
        import av  # noqa: F401
    except ImportError:
        print('clip_file: error: PyAV is needed: pip install "av>=12"', file=sys.stderr)
        return 2
    try:
        video, question, answer = held_out_question(args.clip, args.frames)
    except IndexError:  # a question about frame numbers past the pair's vocabulary
        parser.error(f"clip {args.clip}'s question cannot be asked of {args.frames} frames")
    write_video(args.out, video)
    print(f"question: {question}\nanswer:   {answer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
