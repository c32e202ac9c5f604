"""The package's vLLM plugin entry point (``vllm.general_plugins``): two LLaVA-OneVision
architectures, one of them the embedded micro pair's, servable from a plain install.

vLLM calls :func:`register` in every process it starts (API server, engine core, workers)
wherever specvlm is installed. It registers two architecture names and changes nothing else
that works:

* ``SpecVLMLlavaOnevision``: vLLM's own LLaVA-OneVision model class with one vLLM 0.32 bug
  fixed: videos of different frame counts in one step take the engine down
  (``specvlm/vllm_plugin/llava_model.py`` says how). ``specvlm serve`` selects it for a local
  LLaVA-OneVision checkpoint.
* ``SpecVLMMicroLlavaOnevision``: the same, with two more differences the embedded pair
  (``specvlm/assets/micro``, saved by transformers 5) needs:

  * its SigLIP weight names (``vision_tower.X``) are mapped to vLLM's
    (``vision_tower.vision_model.X``); a checkpoint already in vLLM's names is untouched;
  * its HF processor is built without torchvision: the stock ``LlavaOnevisionProcessor`` with
    the pair's video processor settings, its one torchvision op (the resize) done in torch
    (:func:`specvlm.micro.processor.micro_processor`). transformers' argument check, which looks
    for torchvision's video base class, is skipped for the video processor on this subclass
    only.

  ``specvlm serve micro`` selects it (``--hf-overrides``); nothing selects it otherwise.
* Where torchvision cannot be imported, vLLM's LLaVA-OneVision module still imports two helper
  functions from transformers' torchvision image-processor modules (through vLLM's Qwen2-VL and
  Pixtral modules). Only a module whose own import fails is replaced, in ``sys.modules``, by a
  module holding the same names from its PIL twin; with torchvision importable nothing happens.

Registration is idempotent and costs nothing until the architecture is used: vLLM's model
modules are imported only when an engine is built.
"""

from __future__ import annotations

import importlib
import sys
import types

LLAVA_ARCHITECTURE = "SpecVLMLlavaOnevision"
MICRO_ARCHITECTURE = "SpecVLMMicroLlavaOnevision"
# where vLLM finds each class, by name (imported only when served)
CLASSES = {
    LLAVA_ARCHITECTURE: "specvlm.vllm_plugin.llava_model",
    MICRO_ARCHITECTURE: "specvlm.micro.vllm_model",
}

# module -> (its PIL twin, the names vLLM imports from it)
_PIL_TWINS = {
    "transformers.models.qwen2_vl.image_processing_qwen2_vl": (
        "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl",
        {"smart_resize": "smart_resize", "Qwen2VLImageProcessor": "Qwen2VLImageProcessorPil"},
    ),
    "transformers.models.pixtral.image_processing_pixtral": (
        "transformers.models.pixtral.image_processing_pil_pixtral",
        {"_num_image_tokens": "_num_image_tokens"},
    ),
}


def register() -> None:
    """Register both architectures with vLLM, by name (idempotent)."""
    from vllm import ModelRegistry

    known = ModelRegistry.get_supported_archs()
    for name, module in CLASSES.items():
        if name not in known:  # by name: vLLM imports the class only when it serves it
            ModelRegistry.register_model(name, f"{module}:{name}")


def stand_in_unimportable_image_modules() -> list[str]:
    """Give each module of :data:`_PIL_TWINS` whose import fails (torchvision missing or
    unloadable) a stand-in with the same names from its PIL twin; returns the modules replaced."""
    replaced = []
    for name, (twin_name, names) in _PIL_TWINS.items():
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            continue
        except Exception:  # ImportError where torchvision is missing; its own error if broken
            pass
        twin = importlib.import_module(twin_name)
        stand_in = types.ModuleType(name, f"specvlm: {twin_name}'s names (no torchvision)")
        stand_in.__dict__.update({ours: getattr(twin, theirs) for ours, theirs in names.items()})
        sys.modules[name] = stand_in
        replaced.append(name)
    return replaced
