"""specvlm.tools.video_input.read_video: frames picked while decoding (bounded memory), and a
clear one-line InputError for every kind of bad video file."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from specvlm.micro.clip_file import write_video as write_clip
from specvlm.tools.video_input import InputError, frame_indices, read_video, sample_frames

av = pytest.importorskip("av")


def write_video(path, frames: int, width: int = 64, height: int = 48, fps: int = 25) -> None:
    """A video whose frame i is grey at level 16 + 5 * (i % 40) with one white column that
    moves: each frame tells which it is (modulo 40). Made one frame at a time (900 frames of
    320x240 are never held at once)."""

    def made():
        image = np.zeros((height, width, 3), np.uint8)
        for i in range(frames):
            image[:] = 16 + 5 * (i % 40)
            image[:, i % width] = 255
            yield image  # encoded before the next one is drawn

    write_clip(path, made(), fps=fps)


def ids(frames: np.ndarray) -> list[int]:
    """Each frame's index modulo 40, read back from its grey level."""
    return [int(round((np.median(f) - 16) / 5)) for f in frames]


def test_frames_are_sampled_evenly_as_sample_frames_does(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, 40)
    every = read_video(str(path))
    assert every.shape == (40, 48, 64, 3) and every.dtype == np.uint8
    assert ids(every) == list(range(40))
    for count in (1, 8, 40, 50):  # 50 > 40: frames repeat, as sample_frames repeats them
        picked = read_video(str(path), count)
        assert picked.shape == (count, 48, 64, 3)
        np.testing.assert_array_equal(picked, sample_frames(every, count))
        assert ids(picked) == frame_indices(40, count).tolist()


def test_container_without_a_frame_count(tmp_path):
    """Matroska does not store the frame count: the frames are counted from the packets."""
    path = tmp_path / "clip.mkv"
    write_video(path, 30)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # what makes this test the fallback
    assert ids(read_video(str(path), 4)) == frame_indices(30, 4).tolist()


def test_a_long_video_is_read_in_bounded_memory(tmp_path):
    """900 frames of 320x240 (207 MB decoded); reading 8 of them holds about 8 frames: the
    memory traced while reading (numpy arrays included) stays under 12 frames' worth."""
    path = tmp_path / "long.mp4"
    write_video(path, 900, width=320, height=240, fps=30)
    frame_bytes = 320 * 240 * 3
    tracemalloc.start()
    try:
        video = read_video(str(path), 8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ids(video) == [i % 40 for i in frame_indices(900, 8).tolist()]
    assert video.nbytes == 8 * frame_bytes
    assert peak < 12 * frame_bytes, f"{peak / frame_bytes:.1f} frames held"


def _damaged(tmp_path, name: str, edit) -> str:
    path = tmp_path / "clip.mp4"
    write_video(path, 60)
    data = bytearray(path.read_bytes())
    out = tmp_path / name
    out.write_bytes(edit(data))
    return str(out)


def _middle_garbage(data: bytearray) -> bytes:
    n = len(data)
    rng = np.random.default_rng(0)
    data[n // 3 : n // 3 + n // 4] = rng.integers(0, 256, n // 4, dtype=np.uint8).tobytes()
    return bytes(data)


def _audio_only(path) -> str:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 8000
        for k in range(5):
            frame.pts = 1024 * k
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: _audio_only(d / "sound.mp4"), "has no video stream (its streams: audio)"),
        (
            lambda d: _damaged(d, "middle.mp4", _middle_garbage),
            "cannot decode video {path} after frame",
        ),
        (
            lambda d: _damaged(d, "half.mp4", lambda data: bytes(data[: len(data) // 2])),
            "cannot decode video {path}",
        ),
        (lambda d: _damaged(d, "text.mp4", lambda data: b"not a video"), "cannot decode video"),
        (lambda d: str(d), "is a directory, not a video file"),
        (lambda d: str(d / "missing.mp4"), "video file not found"),
    ],
    ids=["audio-only", "corrupted-middle", "truncated", "not-a-video", "directory", "missing"],
)
def test_bad_videos_give_one_clear_line(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        read_video(path, 8)
    text = str(info.value)
    assert message.format(path=path) in text and "\n" not in text
    assert "tuple index" not in text and "Errno" not in text
