"""vLLM's LLaVA-OneVision model class for the embedded micro pair (registered by name by
:mod:`specvlm.vllm_plugin.models`, imported by vLLM only when it serves the pair): the bug fix of
:class:`~specvlm.vllm_plugin.llava_model.SpecVLMLlavaOnevision`, the SigLIP weight names
transformers 5 saves, and the pair's torchvision-free HF processor."""

from __future__ import annotations

# first: llava_model gives vLLM's LLaVA-OneVision module the helpers it imports, where
# torchvision cannot be imported, before that module is imported
from specvlm.vllm_plugin.llava_model import SpecVLMLlavaOnevision, llava  # isort: skip
from vllm.model_executor.models.utils import WeightsMapper  # isort: skip
from vllm.multimodal import MULTIMODAL_REGISTRY  # isort: skip

_Stock = llava.LlavaOnevisionForConditionalGeneration


class MicroProcessingInfo(llava.LlavaOnevisionProcessingInfo):
    """The stock processing, with the pair's torchvision-free HF processor."""

    def get_hf_processor(self, **kwargs):
        from specvlm.micro.processor import micro_processor

        return micro_processor(self.ctx.model_config.model)


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
