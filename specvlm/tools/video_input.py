"""Frames of a video file, and model inputs for one video and one prompt from a checkpoint.

:func:`read_video` decodes a file with PyAV and keeps only the frames it samples (bounded
memory, whatever the length of the video). :class:`VideoPrompter` turns frames and a prompt into
``generate`` inputs. With a working torchvision, the checkpoint's own processor
(``AutoProcessor.from_pretrained``) does the work, for every family. Without it, transformers
cannot build any video processor, so for LLaVA-OneVision checkpoints this module does what the
processor does, from the checkpoint's own files and without patching transformers: the
tokenizer's chat template (loaded with ``AutoTokenizer``), ``<video>`` expanded to
``frames x ceil(P/2)^2 + 1`` tokens, and the saved video-processor settings (size, rescale,
normalize) applied to the frames; frames of another size are resized to the processor's size
as its ``resize`` would (:func:`resize_video`: torchvision's antialiased resize, in torch), or
refused in one line where the processor does not resize (``do_resize`` false).

torch is imported only where the pixels are made: :func:`read_video` (numpy and PyAV) runs
among the CLI's argument checks, before torch loads.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
from typing import TYPE_CHECKING

import numpy as np

from specvlm.tools.common import InputError, check_video_path, one_line

if TYPE_CHECKING:
    import torch


def sample_frames(video: np.ndarray, count: int) -> np.ndarray:
    """``count`` frames spread evenly over ``video`` ``[F, H, W, 3]`` (repeats if F < count)."""
    return video[frame_indices(len(video), count)]


def frame_indices(total: int, count: int) -> np.ndarray:
    """The indices of ``count`` frames spread evenly over ``total`` frames, first and last
    included (repeated when ``total < count``)."""
    return np.linspace(0, total - 1, count).round().astype(int)


def read_video(
    path: str, frames: int | None = None, segment: tuple[float, float] | None = None
) -> np.ndarray:
    """Decode a video file with PyAV into uint8 ``[frames, H, W, 3]`` (RGB): ``frames`` frames
    spread evenly over the video as :func:`sample_frames` spreads them, or every frame when
    ``frames`` is None (memory grows with the video then).

    Frames are picked while decoding: only the wanted frames are converted and kept, so the
    memory held is ``frames`` decoded frames whatever the length of the video, and decoding
    stops after the last wanted frame. ``segment``: ``(start, end)`` in seconds, the part of
    the video the frames are spread over (with ``frames`` only; the stream's average frame rate
    maps seconds to frames). :class:`InputError` for a file that is missing, a directory, has
    no video stream, or cannot be decoded, or a segment outside the video (the message says
    which, in one line)."""
    check_video_path(path)
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if segment is not None and frames is None:
        raise ValueError("a segment needs a frame count")
    import av

    try:
        with av.open(path) as container:
            streams = container.streams
            if not streams.video:
                kinds = ", ".join(sorted({s.type for s in streams})) or "none"
                raise InputError(f"{path} has no video stream (its streams: {kinds})")
            total = streams.video[0].frames or _count_frames(container)
            rate = float(streams.video[0].average_rate or 0)
        if frames is None:
            kept, _ = _decode_picked(path, None)
            wanted = sorted(kept)
        else:
            wanted = _picked(total, frames, segment, rate, path)
            kept, decoded = _decode_picked(path, set(wanted))
            if len(kept) < len(set(wanted)) and decoded:  # fewer frames than the header said
                wanted = _picked(decoded, frames, segment, rate, path)
                kept, decoded = _decode_picked(path, set(wanted))
        if not kept:
            raise InputError(f"no video frames could be decoded from {path}")
        return np.stack([kept[i] for i in wanted])
    except InputError:
        raise
    except Exception as err:  # PyAV raises many types for broken files
        raise InputError(f"cannot decode video {path}: {one_line(err)}") from err


def _picked(
    total: int, frames: int, segment: tuple[float, float] | None, rate: float, path: str
) -> list[int]:
    """The indices of ``frames`` frames spread evenly over ``total`` frames, or over the frames
    of ``segment`` (seconds, at ``rate`` frames per second)."""
    total = max(total, 1)
    if segment is None:
        return frame_indices(total, frames).tolist()
    start, end = segment
    if not 0 <= start <= end:
        raise InputError(f"{path}: bad segment {start:g}-{end:g} s (want 0 <= start <= end)")
    if rate <= 0:
        raise InputError(f"{path}: the video has no frame rate, so a segment cannot be read")
    first = int(start * rate)
    if first >= total:
        raise InputError(
            f"{path}: the segment {start:g}-{end:g} s starts after the video's {total / rate:.1f} s"
        )
    last = min(max(int(end * rate), first), total - 1)
    return (first + frame_indices(last - first + 1, frames)).tolist()


def _count_frames(container) -> int:
    """Frames of the first video stream, counted from its packets (no decoding), for containers
    that do not say."""
    stream = container.streams.video[0]
    return sum(1 for packet in container.demux(stream) if packet.size)


def _decode_picked(path: str, wanted: set[int] | None) -> tuple[dict[int, np.ndarray], int]:
    """``({index: RGB array}, frames decoded)``: the ``wanted`` frames (every frame for None),
    decoding up to the last wanted one or the end of the stream. Only wanted frames are
    converted and kept."""
    import av

    last = max(wanted) if wanted is not None else None
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if wanted is None or index in wanted:
                    kept[index] = frame.to_ndarray(format="rgb24")
                if last is not None and index >= last:
                    break
        except av.error.FFmpegError as err:
            where = f"after frame {decoded}" if decoded else "at its first frame"
            raise InputError(
                f"cannot decode video {path} {where}: {one_line(err)} (damaged or truncated?)"
            ) from err
    return kept, decoded


def _messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]


def _video_processor_config(path: str) -> dict:
    """The saved video-processor settings of a checkpoint directory or hub id:
    ``video_preprocessor_config.json`` (hub checkpoints) or the ``video_processor`` entry of
    ``processor_config.json`` (recent transformers)."""
    from transformers.utils import cached_file

    def find(name: str) -> str | None:
        if os.path.isdir(path):
            local = os.path.join(path, name)
            return local if os.path.isfile(local) else None
        return cached_file(path, name, _raise_exceptions_for_missing_entries=False)

    single = find("video_preprocessor_config.json")
    if single:
        with open(single) as f:
            return json.load(f)
    combined = find("processor_config.json")
    if combined:
        with open(combined) as f:
            cfg = json.load(f).get("video_processor")
        if cfg:
            return cfg
    raise InputError(f"{path} has no video processor settings (video_preprocessor_config.json)")


# PIL resampling codes (a processor's saved "resample") -> torch.nn.functional.interpolate modes,
# as transformers maps them to torchvision's (NEAREST is torchvision's NEAREST_EXACT)
RESAMPLE_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}


def resize_video(video: torch.Tensor, height: int, width: int, resample=3, antialias=True):
    """``video`` ``[..., C, H, W]`` resized to ``height x width`` in plain torch, pixel for
    pixel as transformers' torchvision video processors resize it
    (``torchvision.transforms.v2.functional.resize``): frames already of that size come back
    unchanged; bilinear and bicubic are antialiased; uint8 frames are resized natively on the
    CPU where torchvision does so (bicubic, and bilinear with AVX2 or better), else through
    float32, clamped (bicubic) and rounded; float frames stay float. ``resample``: a PIL code
    (0 nearest, 2 bilinear, 3 bicubic; the processors' ``resample``). :class:`InputError` for
    another code. Checked against torchvision 0.28 (docs/serving.md)."""
    import torch

    mode = RESAMPLE_MODES.get(int(resample))
    if mode is None:
        names = ", ".join(f"{code} ({name})" for code, name in RESAMPLE_MODES.items())
        raise InputError(f"resample {resample} is not supported without torchvision; use {names}")
    shape = video.shape
    channels, old_h, old_w = shape[-3:]
    if (old_h, old_w) == (height, width):
        return video
    if video.numel() == 0:
        return video.new_empty(shape[:-3] + (channels, height, width))
    smooth = mode in ("bilinear", "bicubic")
    if video.dtype in (torch.float32, torch.float64):
        native = True
    elif video.dtype == torch.uint8 and not smooth:
        native = True
    elif video.dtype == torch.uint8 and video.device.type == "cpu":
        native = mode == "bicubic" or (
            torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
            or platform.machine() in ("aarch64", "arm64")
        )
    else:  # through float32
        native = False
    x = video.reshape(-1, channels, old_h, old_w)
    x = x if native else x.to(torch.float32)
    x = torch.nn.functional.interpolate(
        x,
        size=(height, width),
        mode=mode,
        align_corners=False if smooth else None,
        antialias=antialias and smooth,
    )
    if not native:
        if mode == "bicubic" and video.dtype == torch.uint8:
            x = x.clamp_(0, 255)
        if not video.dtype.is_floating_point:
            x = x.round_()
        x = x.to(video.dtype)
    return x.reshape(shape[:-3] + (channels, height, width))


def _torchvision_works() -> bool:
    """Whether torchvision imports (a torchvision built for another torch fails to register its
    ops, e.g. with the CPU torch 2.13 wheel): transformers' video processors need it."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception:
        return False
    return True


class VideoPrompter:
    """Builds ``generate`` inputs for a checkpoint (a directory or a hub id; see the module
    docstring): ``VideoPrompter(path, model.config)(frames, prompt) -> dict``."""

    def __init__(self, path, config):
        path = str(path)
        self.path, self.config = path, config
        self.processor = None
        if _torchvision_works():
            from transformers import AutoProcessor

            self.processor = AutoProcessor.from_pretrained(path)
            self.tokenizer = self.processor.tokenizer
            return
        if config.model_type != "llava_onevision":
            raise InputError(
                f"{config.model_type} checkpoints need their processor, which needs torchvision "
                "(pip install torchvision)"
            )
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.video_cfg = _video_processor_config(path)

    def __call__(self, frames: np.ndarray, prompt: str) -> dict:
        """``frames`` uint8 ``[T, H, W, 3]`` (already sampled) and a user prompt."""
        if self.processor is not None:
            text = self.processor.apply_chat_template(
                _messages(prompt), add_generation_prompt=True, tokenize=False
            )
            return dict(self.processor(text=text, videos=[frames], return_tensors="pt"))
        text = self.tokenizer.apply_chat_template(
            _messages(prompt), add_generation_prompt=True, tokenize=False
        )
        vision = self.config.vision_config
        side = math.ceil((vision.image_size // vision.patch_size) / 2)
        video_token = self.tokenizer.convert_ids_to_tokens(self.config.video_token_id)
        if text.count(video_token) != 1:
            raise InputError(f"the chat template must place one {video_token} in the prompt")
        text = text.replace(video_token, video_token * (len(frames) * side * side + 1))
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "pixel_values_videos": self._pixels(frames)[None],
        }

    def _pixels(self, frames: np.ndarray) -> torch.Tensor:
        import torch

        cfg = self.video_cfg
        # uint8 TCHW, contiguous as the processor makes it (the resize kernels depend on it)
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
        size = cfg.get("size") or {}
        height, width = size.get("height"), size.get("width")
        if height and width and (height, width) != tuple(x.shape[-2:]):  # the model's size
            if not cfg.get("do_resize", True):
                raise InputError(
                    f"the video's frames are {x.shape[-2]}x{x.shape[-1]} (height x width); "
                    f"{self.path} takes {height}x{width} frames and its video processor does "
                    "not resize them (do_resize false)"
                )
            x = resize_video(x, height, width, cfg.get("resample", 3))
        if cfg.get("do_rescale", True):
            x = x * cfg.get("rescale_factor", 1 / 255)
        x = x.float()
        if cfg.get("do_normalize", False):
            mean = torch.tensor(cfg["image_mean"])[:, None, None]
            std = torch.tensor(cfg["image_std"])[:, None, None]
            x = (x - mean) / std
        return x
