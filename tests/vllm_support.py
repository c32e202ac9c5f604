"""Tiny checkpoints and engines for the vLLM plugin tests (tests/test_vllm_plugin.py).

* :func:`write_pair`: a tiny Qwen2.5-VL target, a smaller draft and a copy of the target (a draft
  that agrees with it, so drafts are accepted), saved as checkpoint directories with a word-level
  tokenizer over the shared 128-token vocabulary and the processor files vLLM's multimodal
  pipeline reads.
* :func:`register_test_architecture`: the test architecture of tests/vllm_test_plugin (vLLM's
  own Qwen2.5-VL model class with a torchvision-free processor; the plugin says how), which
  vLLM also registers in every process it starts. The micro pair's architecture is the
  package's own (:mod:`specvlm.vllm_plugin.models`).
* :func:`video`, :func:`prompt`: distinct random videos and prompts.
* :func:`micro_engine`, :func:`micro_requests`: the embedded micro LLaVA-OneVision pair (a
  trained target and draft) served by vLLM.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import numpy as np
import torch

from tests import tiny_models as tm

ARCHITECTURE = "PlainVideoQwen2_5_VL"  # the name tests/vllm_test_plugin registers
MICRO_ARCHITECTURE = "SpecVLMMicroLlavaOnevision"  # the package's (specvlm.vllm_plugin.models)
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


def register_test_architecture() -> None:
    """The test architectures (tests/vllm_test_plugin, installed by scripts/test_vllm.sh; vLLM
    also calls it in every process it starts)."""
    from specvlm_vllm_test_plugin import register

    register()


def engine(path: str, architecture: str = ARCHITECTURE, **kwargs):
    """A small in-process vLLM engine for the tiny checkpoint at ``path``."""
    from vllm import LLM

    register_test_architecture()
    options = dict(
        hf_overrides={"architectures": [architecture]},
        trust_remote_code=True,
        enforce_eager=True,
        max_model_len=512,
        max_num_seqs=8,
        dtype="float32",
        gpu_memory_utilization=0.3,
        kv_cache_memory_bytes=1 << 27,
        limit_mm_per_prompt={"video": 1, "image": 0},
        seed=0,
    )
    return LLM(path, **{**options, **kwargs})


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


@contextlib.contextmanager
def micro_engine(**kwargs):
    """The embedded micro target served by vLLM (``kwargs``: more engine options, e.g.
    :func:`specvlm.vllm_plugin.engine_args` of the micro draft)."""
    from specvlm.tools.common import EMBEDDED

    llm = engine(str(EMBEDDED / "target"), architecture=MICRO_ARCHITECTURE, **kwargs)
    try:
        yield llm
    finally:
        del llm


def spec_decode_counts(llm) -> dict:
    """vLLM's speculative-decoding counters so far: ``drafts``, ``draft_tokens``,
    ``accepted_tokens`` (absent before any draft)."""
    prefix = "vllm:spec_decode_num_"
    return {
        metric.name.removeprefix(prefix): metric.value
        for metric in llm.get_metrics()
        if metric.name.startswith(prefix) and hasattr(metric, "value")
    }


def micro_draft() -> str:
    from specvlm.tools.common import EMBEDDED

    return str(EMBEDDED / "draft")


def micro_requests(
    count: int, start: int = 0, types=None, frames: int = 8
) -> list[tuple[dict, str]]:
    """Held-out micro questions ``[start, start + count)`` (each of ``types``, default every
    question type, in turn) on clips of ``frames`` frames (16 video tokens each, plus one) as
    (vLLM request, expected answer)."""
    from specvlm.micro.clips import QUESTION_TYPES
    from specvlm.micro.data import eval_examples
    from specvlm.micro.processor import build_processor, prompt

    types = tuple(types or QUESTION_TYPES)
    processor = build_processor()
    per_type = -(-(start + count) // len(types))
    examples = eval_examples(per_type, types, frames=frames)
    # interleave the types: example j of every type, then j + 1, ...
    order = sorted(range(len(examples)), key=lambda i: (i % per_type, i // per_type))
    out = []
    for i in order[start : start + count]:
        _, _, video, question, answer = examples[i]
        request = {"prompt": prompt(processor, question), "multi_modal_data": {"video": video}}
        out.append((request, answer))
    return out


class ConstantProposer:
    """A vLLM ``custom_class`` proposer that proposes one token (``additional_config
    ["constant_token"]``) at every position: a deliberately bad draft, with which vLLM 0.32's
    rejection sampling of sampled requests shifts the output distribution (the reason the
    SpecVLM proposer drafts greedy requests only)."""

    def __init__(self, vllm_config):
        self.k = vllm_config.speculative_config.num_speculative_tokens
        self.token = int(vllm_config.additional_config["constant_token"])

    def load_model(self, target_model) -> None:  # vLLM's CPU runner calls it unconditionally
        pass

    def propose(self, sampled_token_ids, num_tokens_no_spec, token_ids_cpu, slot_mappings=None):
        return [[self.token] * self.k if new else [] for new in sampled_token_ids]
