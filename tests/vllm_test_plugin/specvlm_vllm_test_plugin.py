"""The test architecture for SpecVLM's vLLM tests, registered in every vLLM process.

vLLM calls :func:`register` (entry point ``vllm.general_plugins``) in the main process and in
every engine-core and worker process it starts. It registers ``PlainVideoQwen2_5_VL``: vLLM's
Qwen2.5-VL with an HF processor that accepts the torchvision-free video processor of the tiny
test checkpoints (tests/vllm_video_processor.py). Where torchvision cannot be imported, the
package's own plugin step (:func:`specvlm.vllm_plugin.models.stand_in_unimportable_image_modules`)
first gives vLLM's Qwen2-VL module the transformers helpers it imports.

The embedded micro pair's architecture is not here: the package's own plugin entry point
registers it (:mod:`specvlm.vllm_plugin.models`). Nothing here is in the specvlm package.
"""

from __future__ import annotations

ARCHITECTURE = "PlainVideoQwen2_5_VL"


def register() -> None:
    """Register the test architecture with vLLM (idempotent)."""
    from specvlm.vllm_plugin.models import stand_in_unimportable_image_modules

    stand_in_unimportable_image_modules()
    from transformers import Qwen2_5_VLProcessor
    from vllm import ModelRegistry
    from vllm.model_executor.models import qwen2_5_vl as qwen
    from vllm.multimodal import MULTIMODAL_REGISTRY

    if ARCHITECTURE in ModelRegistry.get_supported_archs():
        return

    class PlainVideoQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor":  # transformers' check needs torchvision
                return type(argument)
            return super().check_argument_for_proper_class(argument_name, argument)

    class ProcessingInfo(qwen.Qwen2_5_VLProcessingInfo):
        def get_hf_processor(self, **kwargs):
            return self.ctx.get_hf_processor(PlainVideoQwen2_5_VLProcessor, **kwargs)

    @MULTIMODAL_REGISTRY.register_processor(
        qwen.Qwen2_5_VLMultiModalProcessor,
        info=ProcessingInfo,
        dummy_inputs=qwen.Qwen2_5_VLDummyInputsBuilder,
    )
    class PlainVideoQwen2_5_VL(qwen.Qwen2_5_VLForConditionalGeneration):
        pass

    ModelRegistry.register_model(ARCHITECTURE, PlainVideoQwen2_5_VL)
