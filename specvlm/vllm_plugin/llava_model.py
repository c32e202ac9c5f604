"""vLLM's LLaVA-OneVision model class with one vLLM 0.32 bug fixed (registered by name by
:mod:`specvlm.vllm_plugin.models`, imported by vLLM only when it serves it; the micro pair's
variant is :mod:`specvlm.micro.vllm_model`)."""

from __future__ import annotations

from specvlm.vllm_plugin.models import stand_in_unimportable_image_modules

stand_in_unimportable_image_modules()  # before vLLM's llava_onevision imports them

from vllm.model_executor.models import llava_onevision as llava  # noqa: E402

_Stock = llava.LlavaOnevisionForConditionalGeneration


class SpecVLMLlavaOnevision(_Stock):
    """vLLM's LLaVA-OneVision. vLLM 0.32 embeds the videos of one step as a list when their frame
    counts differ, and then gives each video's embeddings a leading axis of 1
    (``[1, tokens, hidden]``); the runner's check wants ``[tokens, hidden]`` and its assertion
    kills the engine (a 129-token and a 961-token video arriving together is enough). Here the
    axis is dropped; nothing else changes."""

    def _process_video_pixels(self, inputs):
        embedded = super()._process_video_pixels(inputs)
        if isinstance(embedded, list):
            return [e.squeeze(0) if e.dim() == 3 else e for e in embedded]
        return embedded
