"""vLLM's LLaVA-OneVision model class with one vLLM 0.32 bug fixed, and its variant for the
embedded micro pair (registered by name by :mod:`specvlm.vllm_plugin.models`, imported by vLLM
only when it serves one of them)."""

from __future__ import annotations

from specvlm.vllm_plugin.models import stand_in_unimportable_image_modules

stand_in_unimportable_image_modules()  # before vLLM's llava_onevision imports them

from vllm.model_executor.models import llava_onevision as llava  # noqa: E402
from vllm.model_executor.models.utils import WeightsMapper  # noqa: E402
from vllm.multimodal import MULTIMODAL_REGISTRY  # noqa: E402

_Stock = llava.LlavaOnevisionForConditionalGeneration


class MicroProcessingInfo(llava.LlavaOnevisionProcessingInfo):
    """The stock processing, with the pair's torchvision-free HF processor."""

    def get_hf_processor(self, **kwargs):
        from specvlm.micro.processor import micro_processor

        return micro_processor(self.ctx.model_config.model)


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


@MULTIMODAL_REGISTRY.register_processor(
    llava.LlavaOnevisionMultiModalProcessor,
    info=MicroProcessingInfo,
    dummy_inputs=llava.LlavaOnevisionDummyInputsBuilder,
)
class SpecVLMMicroLlavaOnevision(SpecVLMLlavaOnevision):
    """vLLM's LLaVA-OneVision; the SigLIP weight names transformers 5 saves (``vision_tower.X``)
    mapped to vLLM's (``vision_tower.vision_model.X``)."""

    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_prefix={
            **_Stock.hf_to_vllm_mapper.orig_to_new_prefix,
            **{
                f"vision_tower.{part}.": f"vision_tower.vision_model.{part}."
                for part in ("embeddings", "encoder", "post_layernorm")
            },
        }
    )
