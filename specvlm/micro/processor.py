"""A stock ``LlavaOnevisionProcessor`` for the micro pair, usable without torchvision.

FINDINGS (transformers 5.24.0 installed here, 5.17.0 read and run from /tmp/tf517pkg; this
machine has no torchvision: PyPI's wheels do not load beside the CPU torch 2.13 build)

* Every video processor requires torchvision, in both versions.  5.24:
  ``BaseVideoProcessor(VideoProcessorMixin, TorchvisionBackend)``; 5.17:
  ``BaseVideoProcessor(TorchvisionBackend)``; both ``@requires(backends=("vision",
  "torchvision"))``.  There is no PIL video backend (5.24's ``AutoVideoProcessor`` takes a
  ``backend=`` argument, default "torchvision", but only "torchvision" classes are mapped; the
  image side has ``LlavaOnevisionImageProcessorPil``, which ``AutoImageProcessor`` falls back
  to with a warning).  ``use_fast=False`` changes nothing for videos.
* Without torchvision, ``from transformers import LlavaOnevisionVideoProcessor`` (and
  ``BaseVideoProcessor``, ``VideoProcessorMixin``, ``VIDEO_PROCESSOR_MAPPING``) give dummy
  objects that raise ImportError.  The real class is importable from
  ``transformers.models.llava_onevision.video_processing_llava_onevision`` and constructs.
* Its preprocessing runs without torchvision iff no torchvision op is reached:
  ``do_convert_rgb=False`` (tvF.grayscale_to_rgb), ``do_resize`` (tvF.resize: see RESIZE),
  ``do_center_crop`` off, ``do_normalize=False`` (tvF.normalize); ``do_rescale=True`` is plain
  ``x * (1/255)``.  So pixel values are in [0, 1] (the micro models are trained on exactly
  that; with torchvision installed the same code path runs).
* ``LlavaOnevisionProcessor(...)`` itself cannot be constructed without torchvision, whatever
  video processor is passed (even None): the argument class check looks up
  ``transformers.VideoProcessorMixin`` (5.24: not exported, then the dummy
  ``transformers.VIDEO_PROCESSOR_MAPPING`` -> AttributeError "... has no attribute
  '_extra_content'") / ``transformers.BaseVideoProcessor`` (5.17: dummy ->
  TypeError "... but a BaseVideoProcessor was expected").  ``AutoProcessor.from_pretrained``
  of a saved LLaVA-OneVision processor fails too, in both versions: ``AutoVideoProcessor``
  resolves "LlavaOnevisionVideoProcessor" to the top-level dummy (ImportError
  "LlavaOnevisionVideoProcessor requires the Torchvision library").  No constructor flag,
  ``use_fast`` or ``backend`` option avoids this.
* Workaround (:func:`torchvision_stand_ins`, a context manager used by the build helpers here,
  never by the library at run time): for the duration of the block, put the real
  ``VideoProcessorMixin`` / ``BaseVideoProcessor`` / ``LlavaOnevisionVideoProcessor`` classes on
  the top-level ``transformers`` module in place of the dummies (the video processor: the real
  class with its resize done in torch, see RESIZE), and register that video processor class
  for ``LlavaOnevisionConfig`` with ``AutoVideoProcessor.register``; all of it
  is undone on exit. Nothing happens when torchvision is importable.  Inside it, in both 5.17
  and 5.24: the processor constructs, saves, and
  ``AutoProcessor.from_pretrained(path)`` reloads it (tokenizer: TokenizersBackend; image
  processor: LlavaOnevisionImageProcessorPil; video processor: LlavaOnevisionVideoProcessor)
  and gives identical outputs; a directory saved by either version loads in the other.  The
  saved files are a plain LLaVA-OneVision processor checkpoint (processor_config.json names
  LlavaOnevisionImageProcessor / LlavaOnevisionVideoProcessor), so with torchvision installed
  they should load without specvlm (not verifiable here).
* RESIZE.  The saved settings once had ``do_resize=False`` (no torchvision op): a video of
  another size (128x128, 48x80) then went through unchanged, with as many ``<video>`` tokens as
  a 64x64 one, and failed inside the model (a shape error in the vision tower; served by vLLM,
  in the engine, which it left unusable).  Now ``do_resize=True`` (``resample`` 3, bicubic,
  antialiased; the stock processor's defaults): with torchvision the stock class resizes; without
  it, the class the stand-ins give (:func:`_torch_resize_class`) resizes in torch
  (``specvlm.tools.video_input.resize_video``), identical to torchvision 0.28's resize on 193
  cases (sizes, uint8 and float, nearest / bilinear / bicubic; checked with torchvision's
  Python code, its C++ ops unloaded).  Frames of 64x64 come back unchanged, so the pair's
  answers on its own clips are the same as before.
* Output for an 8-frame 64x64 uint8 video with vision image_size 64, patch_size 8
  (num_image_tokens = (64/8)**2 = 64, vision_feature_select_strategy "full"):
  ``pixel_values_videos`` float32 [1, 8, 3, 64, 64] (batch, frames, C, H, W) in [0, 1];
  one ``<video>`` in the prompt expands to 8 * ceil(8/2)**2 + 1 = 129 ``<video>`` tokens
  (the last gets the model's image_newline); no mm_token_type_ids by default.  Same in both
  versions.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import os
from collections.abc import Iterator

import numpy as np
from transformers import AutoProcessor, LlavaOnevisionConfig, LlavaOnevisionProcessor

from specvlm.micro.clips import FRAME_SIZE, PATCH_SIZE, num_video_tokens  # noqa: F401  (re-export)
from specvlm.micro.tokenizer import CHAT_TEMPLATE, build_tokenizer

# The video / image processor settings that avoid every torchvision op but the resize (see
# FINDINGS and RESIZE).
VIDEO_PROCESSOR_SETTINGS = dict(
    do_convert_rgb=False,
    do_resize=True,
    do_center_crop=False,
    do_rescale=True,
    rescale_factor=1 / 255,
    do_normalize=False,
    do_sample_frames=False,
)


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def _real_video_classes():
    """The real (not dummy) video processor classes; without torchvision, the LLaVA-OneVision
    one is :func:`_torch_resize_class` of it (its resize done in torch)."""
    # import_module, not `from transformers... import module`: the lazy parent modules hand out
    # dummies for submodules whose backends (torchvision) are missing.
    vpu = importlib.import_module("transformers.video_processing_utils")
    vmod = importlib.import_module(
        "transformers.models.llava_onevision.video_processing_llava_onevision"
    )

    video_cls = vmod.LlavaOnevisionVideoProcessor
    if not torchvision_available():
        video_cls = _torch_resize_class(video_cls)
    classes = {"LlavaOnevisionVideoProcessor": video_cls}
    for name in ("BaseVideoProcessor", "VideoProcessorMixin"):
        if hasattr(vpu, name):
            classes[name] = getattr(vpu, name)
    return classes


_TORCH_RESIZE_CLASSES: dict[type, type] = {}


def _torch_resize_class(stock: type) -> type:
    """``stock`` (transformers' LlavaOnevisionVideoProcessor) with ``resize``, its one
    torchvision op on the way of the micro pair's settings, done in torch by
    :func:`specvlm.tools.video_input.resize_video` (the same pixels as torchvision's resize).
    Same class name, so a saved processor still names the stock class. One class per
    ``stock``, so that the processor classes compare equal across loads."""
    if stock not in _TORCH_RESIZE_CLASSES:

        def resize(self, image, size, resample=None, antialias=True, **kwargs):
            from specvlm.tools.video_input import resize_video

            if not (size.height and size.width):
                raise ValueError(f"the micro video processor resizes to height x width, got {size}")
            code = 2 if resample is None else resample  # transformers' default: bilinear
            return resize_video(image, size.height, size.width, code, antialias=antialias)

        namespace = {"resize": resize, "__module__": __name__, "__qualname__": stock.__name__}
        _TORCH_RESIZE_CLASSES[stock] = type(stock.__name__, (stock,), namespace)
    return _TORCH_RESIZE_CLASSES[stock]


@contextlib.contextmanager
def torchvision_stand_ins() -> Iterator[None]:
    """Within the block, let transformers build / load the stock LLaVA-OneVision video processor
    when torchvision is missing; everything is put back on exit (nothing happens when torchvision
    is installed).

    Scope: only the build-time helpers here (training script, processor tests) and the vLLM
    tests' plugin (tests/vllm_test_plugin) use it, to write, check and serve a *standard*
    processor checkpoint. The library itself never does: ``specvlm demo``
    builds video inputs from the saved settings (:mod:`specvlm.tools.video_input`) without touching
    transformers.
    """
    if torchvision_available():
        yield
        return
    import transformers

    video_processing_auto = importlib.import_module(
        "transformers.models.auto.video_processing_auto"
    )
    classes = _real_video_classes()
    missing = object()
    saved = {name: transformers.__dict__.get(name, missing) for name in classes}
    mapping = video_processing_auto.VIDEO_PROCESSOR_MAPPING
    extra = getattr(mapping, "_extra_content", None)
    had_extra = extra is not None and LlavaOnevisionConfig in extra
    saved_extra = extra.get(LlavaOnevisionConfig) if had_extra else None
    try:
        for name, cls in classes.items():
            setattr(transformers, name, cls)
        video_processing_auto.AutoVideoProcessor.register(
            LlavaOnevisionConfig, classes["LlavaOnevisionVideoProcessor"], exist_ok=True
        )
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                transformers.__dict__.pop(name, None)
            else:
                setattr(transformers, name, value)
        if extra is not None:
            if had_extra:
                extra[LlavaOnevisionConfig] = saved_extra
            else:
                extra.pop(LlavaOnevisionConfig, None)


def build_processor(
    tokenizer=None, frame_size: int = FRAME_SIZE, patch_size: int = PATCH_SIZE
) -> LlavaOnevisionProcessor:
    """A LlavaOnevisionProcessor for `frame_size` frames seen in `patch_size` patches."""
    with torchvision_stand_ins():
        return _build_processor(tokenizer, frame_size, patch_size)


def _build_processor(
    tokenizer, frame_size: int, patch_size: int, processor_cls=LlavaOnevisionProcessor
) -> LlavaOnevisionProcessor:
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    if tokenizer is None:
        tokenizer = build_tokenizer()
    video_cls = _real_video_classes()["LlavaOnevisionVideoProcessor"]
    size = {"height": frame_size, "width": frame_size}
    video_processor = video_cls(size=size, **VIDEO_PROCESSOR_SETTINGS)
    image_processor = LlavaOnevisionImageProcessorPil(
        size=size,
        image_grid_pinpoints=[[frame_size, frame_size]],
        do_convert_rgb=True,
        do_rescale=True,
        do_normalize=False,
        do_pad=True,
    )
    return processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        num_image_tokens=(frame_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
    )


class _CheckedVideoProcessorLlavaOnevision(LlavaOnevisionProcessor):
    """The stock processor; its argument check, which looks for torchvision's video base class
    on the top-level transformers module, is skipped for the video processor (built here)."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor":
            return type(argument)
        return super().check_argument_for_proper_class(argument_name, argument)


@functools.lru_cache(maxsize=4)
def micro_processor(path: str) -> LlavaOnevisionProcessor:
    """The processor of the micro checkpoint at ``path``, built without torchvision and without
    touching transformers' module (what vLLM serves the pair with: specvlm.vllm_plugin.models).
    Its sizes are read from the checkpoint (``processor_config.json``, ``config.json``); the
    tokenizer is the checkpoint's."""
    from transformers import AutoTokenizer

    with open(os.path.join(path, "processor_config.json")) as f:
        frame_size = json.load(f)["video_processor"]["size"]["height"]
    with open(os.path.join(path, "config.json")) as f:
        patch_size = json.load(f)["vision_config"]["patch_size"]
    return _build_processor(
        AutoTokenizer.from_pretrained(path),
        frame_size,
        patch_size,
        processor_cls=_CheckedVideoProcessorLlavaOnevision,
    )


def save_processor(processor, path: str | os.PathLike) -> None:
    processor.save_pretrained(str(path))


def load_processor(path: str | os.PathLike):
    """``AutoProcessor.from_pretrained(path)`` (inside :func:`torchvision_stand_ins`)."""
    with torchvision_stand_ins():
        return AutoProcessor.from_pretrained(str(path))


def prompt(processor, question: str) -> str:
    """The chat prompt for one video and `question`, ending in the generation prompt."""
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}
    ]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def video_inputs(processor, video: np.ndarray, question: str, return_tensors: str = "pt"):
    """Processor outputs (input_ids, attention_mask, pixel_values_videos) for one example."""
    return processor(
        text=prompt(processor, question), videos=[np.asarray(video)], return_tensors=return_tensors
    )
