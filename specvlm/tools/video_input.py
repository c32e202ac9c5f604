"""Model inputs for one video and one prompt, from a checkpoint directory.

With torchvision installed, the checkpoint's own processor (``AutoProcessor.from_pretrained``)
does the work, for every family. Without torchvision, transformers cannot build any video
processor, so for LLaVA-OneVision checkpoints this module does what the processor does, from the
checkpoint's own files and without patching transformers: the tokenizer's chat template (loaded
with ``AutoTokenizer``), ``<video>`` expanded to ``frames x ceil(P/2)^2 + 1`` tokens, and the
saved video-processor settings (size, rescale, normalize) applied to the frames; frames of another
size are resized (bilinear, antialiased) to the processor's size.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os

import numpy as np
import torch

from specvlm.tools.common import ToolError


class InputError(ToolError):
    """Bad user input (unreadable video, unsupported checkpoint): one line, no traceback."""


def sample_frames(video: np.ndarray, count: int) -> np.ndarray:
    """``count`` frames spread evenly over ``video`` ``[F, H, W, 3]`` (repeats if F < count)."""
    idx = np.linspace(0, len(video) - 1, count).round().astype(int)
    return video[idx]


def read_video(path: str) -> np.ndarray:
    """Decode a video file with PyAV into uint8 ``[F, H, W, 3]`` (RGB)."""
    if not os.path.isfile(path):
        raise InputError(f"video file not found: {path}")
    if importlib.util.find_spec("av") is None:
        raise InputError("reading a video file needs PyAV: pip install av")
    import av

    try:
        with av.open(path) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except Exception as err:  # PyAV raises many types for broken files
        raise InputError(f"cannot decode video {path}: {err}") from err
    if not frames:
        raise InputError(f"no video frames in {path}")
    return np.stack(frames)


def _messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]


def _video_processor_config(path: str) -> dict:
    """The saved video-processor settings: ``video_preprocessor_config.json`` (hub checkpoints)
    or the ``video_processor`` entry of ``processor_config.json`` (recent transformers)."""
    single = os.path.join(path, "video_preprocessor_config.json")
    if os.path.isfile(single):
        with open(single) as f:
            return json.load(f)
    combined = os.path.join(path, "processor_config.json")
    if os.path.isfile(combined):
        with open(combined) as f:
            cfg = json.load(f).get("video_processor")
        if cfg:
            return cfg
    raise InputError(f"{path} has no video processor settings (video_preprocessor_config.json)")


class VideoPrompter:
    """Builds ``generate`` inputs for a checkpoint directory (see the module docstring)."""

    def __init__(self, path: str, config):
        self.path, self.config = path, config
        self.processor = None
        if importlib.util.find_spec("torchvision") is not None:
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
        cfg = self.video_cfg
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # uint8 TCHW
        size = cfg.get("size") or {}
        height, width = size.get("height"), size.get("width")
        if height and (height, width) != tuple(x.shape[-2:]):  # the model needs this size
            x = (
                torch.nn.functional.interpolate(
                    x.float(), size=(height, width), mode="bilinear", antialias=True
                )
                .round()
                .clamp(0, 255)
            )
        if cfg.get("do_rescale", True):
            x = x * cfg.get("rescale_factor", 1 / 255)
        x = x.float()
        if cfg.get("do_normalize", False):
            mean = torch.tensor(cfg["image_mean"])[:, None, None]
            std = torch.tensor(cfg["image_std"])[:, None, None]
            x = (x - mean) / std
        return x
