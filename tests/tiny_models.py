# Tiny random video-LLM pairs (target + draft) and processor-like inputs, for CPU tests.
#
# VERSION NOTES: transformers 5.17 vs 5.24 (read from both sources; tests/test_tiny_models.py
# passes under both, and weights and greedy tokens came out identical in both).
#
# Attribute paths (same in both versions, all three families)
#   language model   model.model.language_model: LLaVA-OV -> Qwen2Model, Qwen2.5-VL ->
#                    Qwen2_5_VLTextModel, Qwen3-VL -> Qwen3VLTextModel; inside: .embed_tokens,
#                    .layers, .norm, .rotary_emb.  model.get_input_embeddings() works too.
#   lm_head          model.lm_head (untied here, tie_word_embeddings=False).
#   vision           LLaVA-OV: model.model.vision_tower (SiglipVisionModel),
#                    .multi_modal_projector, .image_newline;  Qwen: model.model.visual (the patch
#                    merger is inside; Qwen3-VL also has .deepstack_merger_list).
#   mrope state      model.model.rope_deltas, long [B, 1].  STATEFUL: written by get_rope_index at
#                    prefill (and by generate's _prepare_position_ids_for_generation), read back
#                    by compute_3d_position_ids whenever the cache is non-empty.
#
# KV cache argument
#   5.17: forward(..., past_key_values=...), outputs.past_key_values; generate model_kwargs key
#         "past_key_values".
#   5.24: forward(..., cache=...), outputs.cache; generate model_kwargs key "cache".
#         past_key_values= is still accepted (@deprecate_kwarg("past_key_values", "5.40.0",
#         new_name="cache"), warns once) and outputs.past_key_values is a deprecated alias.
#   Portable: `"cache" in inspect.signature(model.forward).parameters`.
#
# Qwen2.5-VL / Qwen3-VL 3-D (M-RoPE) positions
#   Function: model.model.get_rope_index (Qwen2_5_VLModel / Qwen3VLModel); SAME signature in
#   5.17 and 5.24:
#     Qwen2.5-VL: get_rope_index(input_ids, mm_token_type_ids, image_grid_thw=None,
#                   video_grid_thw=None, second_per_grid_ts=None, attention_mask=None, **kwargs)
#     Qwen3-VL:   get_rope_index(input_ids, mm_token_type_ids, image_grid_thw=None,
#                   video_grid_thw=None, attention_mask=None, **kwargs)
#     -> (position_ids long [3, B, L] rows (t, h, w), rope_deltas long [B, 1]).
#   Per grid: get_vision_position_ids(start_position, grid_thw, temp_merge_size=1,
#     spatial_merge_size=1, time_interval=1, device=None) -> [3, n].
#   Grouping is by mm_token_type_ids runs (0 text, 1 image, 2 video), NOT by vision_start tokens,
#   so mm_token_type_ids is REQUIRED.  Without it: Qwen2.5-VL forward silently uses 1-D positions;
#   Qwen3-VL forward raises ValueError; generate() of both silently uses 1-D positions.
#   Text runs: t = h = w = cur + arange.  A visual run: t = cur + t_idx * interval,
#   h = cur + row, w = cur + col; then cur += max(H, W) (merged grid).
#   Qwen2.5-VL interval = vision_config.tokens_per_second * second_per_grid_ts; 5.17 truncates
#   with int(second_per_grid_ts) (0.5 s -> 0!), 5.24 multiplies as float then .long().  Same
#   result for second_per_grid_ts = 1.0 used here (processor: temporal_patch_size / fps).
#   Qwen3-VL: video_grid_thw is repeated per frame (T rows [1, H, W]) and each frame must be its
#   own video run (the processor separates frames with timestamp text), so a frame's t is just
#   `cur` at that frame; time is carried by the "<t.t seconds>" text.
#   Wrapper model.model.compute_3d_position_ids(...) is called by Model.forward when
#   position_ids is None.  Its cache parameter is `past_key_values` (5.17) / `cache` (5.24);
#   argument order differs between the families (use keywords).
#   Rows handed to model.model.language_model (checked with a forward pre-hook, both versions):
#     Model.forward without position_ids: [3, B, L] (t, h, w).
#     generate(): [4, B, L] = [text 1-D positions; t; h; w] at prefill and at every decode step
#       (each step appends last + 1 to each row).  Row 0 is only used for the causal mask.
#     The text models accept [B, L] (broadcast), [3, B, L] or [4, B, L].
#   After the prompt, positions are text_position + rope_deltas on all three rows.
#   Qwen2.5-VL mrope_section splits head_dim/2 into contiguous (t, h, w) chunks; Qwen3-VL
#   interleaves them (t, h, w, t, h, w, ...), using mrope_section[1:] as the h / w counts.
#   5.17 returns a deprecated outputs.rope_deltas; 5.24 does not (read model.model.rope_deltas).
#
# Qwen3-VL deepstack: extra kwargs Model.forward passes to model.model.language_model
#   visual_pos_masks        bool [B, L], True at image/video placeholder tokens;
#   deepstack_visual_embeds list, len = len(vision_config.deepstack_visual_indexes), of
#                           [n_visual_tokens, text_hidden] (all videos of the batch concatenated);
#                           entry i is added at visual_pos_masks to the OUTPUT of decoder layer i.
#   Both are passed as None on decode steps without pixels.  Vision output .deepstack_features:
#   5.17 list of [n, D] tensors; 5.24 list of per-video tuples (split like pooler_output) that
#   forward torch.cat's back.  Here: target has 2 deepstack levels, draft 1.
#
# LLaVA-OneVision
#   Video placeholders: frames * ceil(P/2)**2 + 1 video tokens, P = image_size // patch_size
#   (each frame bilinearly pooled 2x); the LAST slot receives model.model.image_newline.
#   get_video_features(...).pooler_output: 5.17 [B, F*h*w, D] (newline added in Model.forward),
#   5.24 [B, F*h*w + 1, D] (newline already appended).  Positions are plain 1-D ([B, L] in
#   generate, None in forward).  5.24 also forwards logits_to_keep into the language model.
#
# Processors (cannot be instantiated here: no tokenizer download, no torchvision)
#   Both versions expand placeholders with ProcessorMixin.get_text_with_replacements +
#   replace_video_token, which replaces ONLY the pad token.  So for Qwen3-VL with the official
#   chat template "<|vision_start|><|video_pad|><|vision_end|>" the result is NESTED:
#     <|vision_start|> ( <t.t seconds> <|vision_start|> pad * (H*W) <|vision_end|> ) * T
#     <|vision_end|>
#   (transformers 4.57 replaced the whole wrapper).  Qwen2.5-VL:
#     <|vision_start|> pad * (T*H*W) <|vision_end|>, plus second_per_grid_ts and
#   mm_token_type_ids (returned by default by both Qwen processors, not by LLaVA-OV's).
#   5.17 has per-model XxxProcessorKwargs classes with _defaults; 5.24 uses class attributes
#   (return_mm_token_type_ids = True, videos_kwargs = {"return_metadata": True}) and keeps the
#   Kwargs classes as deprecated aliases (removal 5.29).
#   Qwen pixel_values_videos: [T*Hp*Wp, C*temporal_patch*patch*patch], rows ordered (t, h_block,
#   w_block, h_in_merge, w_in_merge), so merged tokens come out (t, row, col).
#
# Other 5.24 additions
#   forward(..., mm_encoder_outputs={"video": <get_video_features output>}) reuses vision encoder
#   outputs (mutually exclusive with pixel_values_videos); outputs are
#   Multimodal{Base,CausalLM}OutputWithPast with .image_outputs / .video_outputs.
#
# Configs
#   Nested dict text_config / vision_config work in both.  5.24 replaces `sub_configs` with
#   `sub_configs_defaults` (SubConfigSpec) and drops keys_to_ignore_at_inference.  Qwen vision
#   configs alias num_hidden_layers -> depth only in 5.24 (use `depth`).  M-RoPE lives in
#   text_config.rope_parameters["mrope_section"] (+ "mrope_interleaved" for Qwen3-VL) and must
#   sum to head_dim / 2.
#
# Choices made for tests (deviations from the real checkpoints)
#   * All weights are re-initialised by _reinit_ (fan-in scaled normals, gain 3.5; Qwen3 q/k norm
#     weight 2; logits std ~3) instead of HF's std 0.02, so greedy outputs vary and depend on the
#     video.  Weights and greedy tokens are identical under 5.17 and 5.24.
#   * lm_head rows of every special id (>= NUM_TEXT_TOKENS) are zero: greedy decoding never emits
#     eos / pad / vision / video tokens (a generated video token would break a later re-prefill).
#     With sampling they keep a small total probability (~0.4% per step on average, up to ~2%;
#     top-1 probability averages ~0.4).  Use set_eos() with an ordinary token to stop early.
#   * `frames` in make_inputs is the number of token frames T; Qwen videos hold 2*T raw frames
#     (temporal_patch_size 2), LLaVA-OV videos T frames.
#   * Qwen3-VL video tokens are NOT contiguous: frames are separated by 8 tokens (6 timestamp
#     tokens + <vision_end> + <vision_start>; 7 timestamp tokens from frame 10 on, "<10.2 s..>"),
#     so video_token_layout's [start, end) covers T*H*W + 8*(T-1) tokens there (T <= 10).
#     Anything taking a contiguous (video_start, video_end) span (e.g.
#     specvlm_kernels.video_attention_scores) needs video_token_positions() for this family.
#   * On the 2-core box torch's default of 2 intra-op threads makes these tiny models ~100x
#     slower (thread-pool barriers); wrap work in single_threaded().
"""Tiny random video-LLM pairs (target + draft) and processor-like inputs, for CPU tests.

Three stock transformers families: LLaVA-OneVision (Qwen2 text model), Qwen2.5-VL and Qwen3-VL
(deepstack).  Nothing is downloaded: models are built from configs with seeded random weights,
and inputs are built by hand to match, token for token, what the family's processor returns for
one prompt holding one video (see the version notes above).
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import nn
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

FAMILIES = ("llava_onevision", "qwen2_5_vl", "qwen3_vl")

# ---------------------------------------------------------------- vocabulary (shared by all)
VOCAB_SIZE = 128
NUM_TEXT_TOKENS = 112  # ids [0, 112) are ordinary text tokens; [112, 128) are special
EOS_TOKEN_ID = 112  # "<|im_end|>"
PAD_TOKEN_ID = 113  # "<|endoftext|>"
VISION_START_TOKEN_ID = 114  # "<|vision_start|>" (Qwen)
VISION_END_TOKEN_ID = 115  # "<|vision_end|>" (Qwen)
IMAGE_TOKEN_ID = 116  # "<|image_pad|>" / "<image>"
VIDEO_TOKEN_ID = 117  # "<|video_pad|>" / "<video>"
SPECIAL_TOKEN_IDS = tuple(range(NUM_TEXT_TOKENS, VOCAB_SIZE))
GENERATION_EOS = EOS_TOKEN_ID  # default eos (never generated greedily: its lm_head row is zero)

# ---------------------------------------------------------------- geometry
PATCH_SIZE = 4
MERGE_SIZE = 2  # Qwen spatial merge / LLaVA-OV 2x pooling
TEMPORAL_PATCH_SIZE = 2  # Qwen
FRAME_PIXELS = 32  # frames are 32x32 px -> 8x8 patches -> 4x4 LLM tokens
QWEN_FPS = 2.0  # sampled fps the Qwen processors assume -> second_per_grid_ts = 2 / 2 = 1.0
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Qwen3-VL timestamp text "<t.t seconds>": characters map to fixed ordinary ids (ASCII codes are
# < 112), " seconds" is one token, like the Qwen tokenizer ("<", "0", ".", "2", " seconds", ">").
_SECONDS_TOKEN_ID = 95

# ---------------------------------------------------------------- sizes
_TARGET = dict(hidden=64, heads=4, kv_heads=2, layers=3, inter=128, vis_hidden=32, vis_depth=2)
_DRAFT = dict(hidden=32, heads=2, kv_heads=1, layers=1, inter=64, vis_hidden=32, vis_depth=1)
_HEAD_DIM = 16
_MROPE_SECTION = [2, 3, 3]  # sums to head_dim / 2
# Sizes for vLLM's CPU backend, whose attention kernels need head_dim >= 32 (tests/vllm_*):
# the same vocabulary, special ids and vision geometry, head_dim 32.
VLLM_TARGET = dict(
    hidden=128, heads=4, kv_heads=2, layers=2, inter=256, vis_hidden=64, vis_depth=2, head_dim=32
)
VLLM_DRAFT = dict(
    hidden=64, heads=2, kv_heads=1, layers=1, inter=128, vis_hidden=64, vis_depth=1, head_dim=32
)
_DRAFT_SEED_OFFSET = 7919
_INIT_GAIN = 3.5  # std = gain / sqrt(fan_in) for Linear / Conv weights
_LM_HEAD_GAIN = 3.0  # logits have std ~3
_QK_NORM_WEIGHT = 2.0  # Qwen3 q_norm / k_norm weight (sharper attention when > 1)
_FAMILY_CLASSES = {
    "llava_onevision": (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration),
    "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
    "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration),
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def _text_config(size: dict, family: str) -> dict:
    cfg = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=size["hidden"],
        intermediate_size=size["inter"],
        num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"],
        num_key_value_heads=size["kv_heads"],
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=PAD_TOKEN_ID,
        tie_word_embeddings=False,
    )
    head_dim = size.get("head_dim", _HEAD_DIM)
    assert size["hidden"] // size["heads"] == head_dim
    mrope_section = [m * head_dim // _HEAD_DIM for m in _MROPE_SECTION]  # sums to head_dim / 2
    if family == "llava_onevision":
        cfg.update(model_type="qwen2", rope_parameters=dict(rope_type="default", rope_theta=1e4))
    elif family == "qwen2_5_vl":
        cfg["rope_parameters"] = dict(
            rope_type="default", rope_theta=1e4, mrope_section=mrope_section
        )
    else:
        cfg.update(
            head_dim=head_dim,
            rope_parameters=dict(
                rope_type="default",
                rope_theta=1e4,
                mrope_section=mrope_section,
                mrope_interleaved=True,
            ),
        )
    return cfg


def _vision_config(size: dict, family: str) -> dict:
    hidden, depth = size["vis_hidden"], size["vis_depth"]
    if family == "llava_onevision":
        return dict(
            model_type="siglip_vision_model",
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=FRAME_PIXELS,
            patch_size=PATCH_SIZE,
            vision_use_head=False,
        )
    common = dict(
        depth=depth,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_heads=2,
        in_channels=3,
        patch_size=PATCH_SIZE,
        spatial_merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        out_hidden_size=size["hidden"],
    )
    if family == "qwen2_5_vl":
        # window_size in pixels: 16 px / patch 4 / merge 2 -> windows of 2x2 merged tokens;
        # the last block uses full attention, as in the real model.
        common.update(window_size=16, fullatt_block_indexes=[depth - 1], tokens_per_second=2)
    else:
        grid = FRAME_PIXELS // PATCH_SIZE
        common.update(
            num_position_embeddings=grid * grid, deepstack_visual_indexes=list(range(depth))
        )
    return common


def _build_config(family: str, size: dict):
    config_cls, _ = _FAMILY_CLASSES[family]
    kwargs = dict(
        text_config=_text_config(size, family),
        vision_config=_vision_config(size, family),
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    if family == "llava_onevision":
        kwargs.update(
            image_token_index=IMAGE_TOKEN_ID,
            video_token_index=VIDEO_TOKEN_ID,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
        )
    else:
        kwargs.update(
            image_token_id=IMAGE_TOKEN_ID,
            video_token_id=VIDEO_TOKEN_ID,
            vision_start_token_id=VISION_START_TOKEN_ID,
            vision_end_token_id=VISION_END_TOKEN_ID,
        )
    return config_cls(**kwargs)


@torch.no_grad()
def _reinit_(model: nn.Module) -> None:
    """Overwrite every weight with a seeded draw from the global RNG (larger than HF's 0.02)."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            fan_in = module.weight[0].numel()
            module.weight.normal_(0.0, _INIT_GAIN / math.sqrt(fan_in))
            if module.bias is not None:
                module.bias.normal_(0.0, 0.1)
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, 1.0)
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()
        elif "RMSNorm" in type(module).__name__ and isinstance(
            getattr(module, "weight", None), nn.Parameter
        ):
            qk = name.endswith(("q_norm", "k_norm"))
            module.weight.fill_(_QK_NORM_WEIGHT if qk else 1.0)
    newline = getattr(model.model, "image_newline", None)
    if newline is not None:
        newline.normal_(0.0, 1.0)
    # Special tokens never win a greedy argmax (their logit is exactly 0, the max over 112
    # random text logits is positive with overwhelming probability).
    lm_head = model.lm_head.weight
    lm_head.normal_(0.0, _LM_HEAD_GAIN / math.sqrt(lm_head.shape[1]))
    lm_head[NUM_TEXT_TOKENS:].zero_()


def _build(family: str, size: dict, seed: int, dtype) -> nn.Module:
    _, model_cls = _FAMILY_CLASSES[family]
    torch.manual_seed(seed)
    model = model_cls(_build_config(family, size))
    _reinit_(model)
    # Cast parameters only: rotary inv_freq buffers stay fp32, as with from_pretrained(dtype=...).
    for param in model.parameters():
        param.data = param.data.to(device="cpu", dtype=dtype)
    set_eos(model, GENERATION_EOS)
    gc = model.generation_config
    gc.bos_token_id = None
    gc.do_sample = False
    return model.eval()


def make_pair(family: str, *, seed: int = 0, dtype=torch.float32, sizes=(_TARGET, _DRAFT)):
    """(target, draft) of `family`: same vocab / special ids / vision geometry, draft smaller.

    target: 3 decoder layers, hidden 64, 4 heads / 2 kv heads, head_dim 16.
    draft:  1 decoder layer,  hidden 32, 2 heads / 1 kv head,  head_dim 16, seed + 7919.
    Both eval(), CPU, sdpa, deterministic for a given seed.
    `sizes`: (target, draft) size dicts, e.g. (VLLM_TARGET, VLLM_DRAFT).
    """
    _check_family(family)
    target = _build(family, sizes[0], seed, dtype)
    draft = _build(family, sizes[1], seed + _DRAFT_SEED_OFFSET, dtype)
    return target, draft


def make_copy_draft(target):
    """A deep copy of `target` (same weights, separate mrope state / generation config)."""
    draft = copy.deepcopy(target)
    if hasattr(draft.model, "rope_deltas"):
        draft.model.rope_deltas = None
    return draft.eval()


def set_eos(model, token_id):
    """Make generate() stop at `token_id` (int, list of ints, or None for the default eos).

    Sets generation_config.eos_token_id and keeps pad_token_id at PAD_TOKEN_ID (never generated),
    so padding and eos never collide. Returns the model.
    """
    if token_id is None:
        token_id = GENERATION_EOS
    gc = model.generation_config
    gc.eos_token_id = token_id
    gc.pad_token_id = PAD_TOKEN_ID
    return model


@contextlib.contextmanager
def single_threaded():
    """Run torch on one intra-op thread inside the block (restored after).

    On the 2-core CI box, tiny models are ~100x slower with 2 intra-op threads than with 1
    (each op pays a thread-pool barrier of several ms); use this around generate() loops.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- inputs


def _family_of(model) -> str:
    for family, (_, cls) in _FAMILY_CLASSES.items():
        if isinstance(model, cls):
            return family
    raise TypeError(f"not a supported model: {type(model).__name__}")


def _text_tokens(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, NUM_TEXT_TOKENS, (n,), generator=gen)


def _random_video(frames: int, gen: torch.Generator) -> torch.Tensor:
    """[frames, 3, 32, 32] in [0, 1], normalised like the CLIP-style video processors."""
    video = torch.rand(frames, 3, FRAME_PIXELS, FRAME_PIXELS, generator=gen)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (video - mean) / std


def _qwen_patchify(video: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """[F, C, H, W] -> ([T*Hp*Wp, C*tp*p*p], (T, Hp, Wp)) in the Qwen processor layout."""
    f, c, h, w = video.shape
    tp, p, m = TEMPORAL_PATCH_SIZE, PATCH_SIZE, MERGE_SIZE
    t, hp, wp = f // tp, h // p, w // p
    x = video.reshape(t, tp, c, hp // m, m, p, wp // m, m, p)
    # -> (t, h_block, w_block, h_in, w_in, c, tp, p_h, p_w)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * hp * wp, c * tp * p * p).contiguous(), (t, hp, wp)


def _timestamp_tokens(seconds: float) -> list[int]:
    text = f"{seconds:.1f}"
    return [ord("<"), *(ord(ch) for ch in text), _SECONDS_TOKEN_ID, ord(">")]


def _llava_tokens_per_side(model) -> int:
    vc = model.config.vision_config
    return math.ceil((vc.image_size // vc.patch_size) / 2)


def make_inputs(
    family: str,
    model,
    *,
    frames: int = 4,
    text_before: int = 5,
    text_after: int = 6,
    seed: int = 0,
    video: bool = True,
) -> dict:
    """What `family`'s processor returns for one prompt: text, one video, text (batch 1).

    llava_onevision: input_ids, attention_mask, pixel_values_videos [1, frames, 3, 32, 32];
        the video is frames*4*4 + 1 (newline) video tokens.
    qwen2_5_vl: input_ids, attention_mask, mm_token_type_ids, pixel_values_videos
        [frames*64, 96], video_grid_thw [[frames, 8, 8]], second_per_grid_ts [1.0];
        <vision_start> video*frames*16 <vision_end>.
    qwen3_vl: input_ids, attention_mask, mm_token_type_ids, pixel_values_videos, video_grid_thw;
        <vision_start> (<t.t seconds> <vision_start> video*16 <vision_end>)*frames <vision_end>.
    `frames` is the number of token frames T (Qwen videos hold 2*T raw frames).
    video=False: the same text without the video (Qwen: mm_token_type_ids all 0).
    """
    _check_family(family)
    if _family_of(model) != family:
        raise ValueError(f"model is {_family_of(model)}, not {family}")
    if frames < 1:
        raise ValueError("frames must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    before = _text_tokens(text_before, gen)
    after = _text_tokens(text_after, gen)
    out: dict = {}
    if not video:
        middle = torch.empty(0, dtype=torch.long)
    elif family == "llava_onevision":
        side = _llava_tokens_per_side(model)
        middle = torch.full((frames * side * side + 1,), VIDEO_TOKEN_ID)
        pixels = _random_video(frames, gen)
        out["pixel_values_videos"] = pixels.unsqueeze(0).to(model.dtype)
    else:
        pixels, (t, hp, wp) = _qwen_patchify(_random_video(frames * TEMPORAL_PATCH_SIZE, gen))
        per_frame = (hp // MERGE_SIZE) * (wp // MERGE_SIZE)
        out["pixel_values_videos"] = pixels.to(model.dtype)
        out["video_grid_thw"] = torch.tensor([[t, hp, wp]], dtype=torch.long)
        if family == "qwen2_5_vl":
            ids = [VISION_START_TOKEN_ID] + [VIDEO_TOKEN_ID] * (t * per_frame)
            ids.append(VISION_END_TOKEN_ID)
            out["second_per_grid_ts"] = torch.tensor([TEMPORAL_PATCH_SIZE / QWEN_FPS])
        else:
            ids = [VISION_START_TOKEN_ID]
            for i in range(t):
                # mean time of raw frames 2i and 2i+1 (temporal patch i) sampled at QWEN_FPS
                seconds = (2 * i + (2 * i + 1)) / (2 * QWEN_FPS)
                ids += _timestamp_tokens(seconds)
                ids += [VISION_START_TOKEN_ID] + [VIDEO_TOKEN_ID] * per_frame
                ids.append(VISION_END_TOKEN_ID)
            ids.append(VISION_END_TOKEN_ID)
        middle = torch.tensor(ids, dtype=torch.long)
    input_ids = torch.cat([before, middle, after]).unsqueeze(0)
    result = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if family != "llava_onevision":
        result["mm_token_type_ids"] = (input_ids == VIDEO_TOKEN_ID).long() * 2
    result.update(out)
    return result


# ---------------------------------------------------------------- layout


def _video_grid(family: str, model, inputs: dict) -> tuple[int, int, int]:
    if family == "llava_onevision":
        side = _llava_tokens_per_side(model)
        return int(inputs["pixel_values_videos"].shape[1]), side, side
    t, hp, wp = (int(v) for v in inputs["video_grid_thw"][0])
    merge = model.config.vision_config.spatial_merge_size
    return t, hp // merge, wp // merge


def video_token_positions(family: str, model, inputs: dict) -> torch.Tensor:
    """Long tensor [T, H, W]: the input_ids index of every grid video token (batch row 0).

    Works for all families, including Qwen3-VL whose frames are separated by timestamp text.
    LLaVA-OV's trailing newline token is not included.
    """
    _check_family(family)
    if "pixel_values_videos" not in inputs:
        raise ValueError("inputs hold no video")
    t, h, w = _video_grid(family, model, inputs)
    pos = (inputs["input_ids"][0] == VIDEO_TOKEN_ID).nonzero().flatten()
    extra = 1 if family == "llava_onevision" else 0
    if pos.numel() != t * h * w + extra:
        raise ValueError(f"{pos.numel()} video tokens, expected {t * h * w + extra}")
    return pos[: t * h * w].view(t, h, w)


def video_token_layout(family: str, model, inputs: dict) -> tuple[int, int, tuple[int, int, int]]:
    """(start, end, (T, H, W)) of the video tokens carrying the frame grid in input_ids[0].

    Tokens are frame-major, row-major.  For llava_onevision and qwen2_5_vl the span is contiguous
    and end - start == T*H*W (LLaVA-OV's newline token sits at `end`, outside the span).
    For qwen3_vl the frames are separated by `<t seconds><vision_start>` ... `<vision_end>` text,
    so [start, end) is the covering span from the first to the last video token and
    end - start == T*H*W + (T-1)*separator_length; use video_token_positions() for exact indices.
    """
    pos = video_token_positions(family, model, inputs)
    start, end = int(pos.flatten()[0]), int(pos.flatten()[-1]) + 1
    return start, end, tuple(pos.shape)
