"""Configs of the micro LLaVA-OneVision target / draft pair (stock transformers classes).

Both share the micro tokenizer's vocabulary and special ids (tokenizer.py) and the vision
geometry: 64x64 frames, SigLIP patch 8 -> 8x8 patches, projected, bilinearly pooled 2x to 4x4 =
16 tokens per frame; 8 frames + 1 image_newline = 129 video tokens
(``vision_feature_select_strategy="full"``).  Text models are Qwen2 (untied lm_head, as
tests/tiny_models.py); vision towers are tiny SigLIP encoders without head, whose patch
embeddings are the video tokens (one encoder layer, computed but unused,
``vision_feature_layer=-2``: each video token holds only its own pixels; see
:func:`read_patch_embeddings`).

Sizes are dicts (see TARGET / DRAFT / TINY_*); ``param_count(config)`` counts parameters by
building the model on the meta device.
"""

from __future__ import annotations

import copy
import re

import torch
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

from specvlm.micro.processor import FRAME_SIZE, PATCH_SIZE
from specvlm.micro.tokenizer import EOS_ID, IMAGE_ID, PAD_ID, VIDEO_ID, vocabulary

# hidden / heads / kv_heads / layers / inter: text (Qwen2); vis_*: SigLIP vision tower.
# patch_embeddings: video tokens from the vision tower's patch embeddings (one SigLIP layer,
# computed but unused, and vision_feature_layer=-2; see read_patch_embeddings), else from the
# encoder's last layer.
TARGET = dict(
    hidden=256,
    heads=4,
    kv_heads=2,
    layers=8,
    inter=768,
    vis_hidden=64,
    vis_heads=2,
    vis_layers=1,
    vis_inter=192,
    patch_embeddings=True,
)
DRAFT = dict(
    hidden=128,
    heads=2,
    kv_heads=1,
    layers=1,
    inter=384,
    vis_hidden=64,
    vis_heads=2,
    vis_layers=1,
    vis_inter=192,
    patch_embeddings=True,
)
# For tests (--tiny): seconds to train, not meant to learn much.
TINY_TARGET = dict(
    hidden=64,
    heads=2,
    kv_heads=1,
    layers=2,
    inter=128,
    vis_hidden=32,
    vis_heads=2,
    vis_layers=1,
    vis_inter=64,
    patch_embeddings=True,
)
TINY_DRAFT = dict(
    hidden=32,
    heads=2,
    kv_heads=1,
    layers=1,
    inter=64,
    vis_hidden=32,
    vis_heads=2,
    vis_layers=1,
    vis_inter=64,
    patch_embeddings=True,
)


def build_config(size: dict, frame_size: int = FRAME_SIZE, patch_size: int = PATCH_SIZE):
    """LlavaOnevisionConfig of `size` for the micro vocabulary and vision geometry."""
    vocab_size = len(vocabulary())
    text = dict(
        model_type="qwen2",
        vocab_size=vocab_size,
        hidden_size=size["hidden"],
        intermediate_size=size["inter"],
        num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"],
        num_key_value_heads=size["kv_heads"],
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        bos_token_id=None,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=False,
    )
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=size["vis_hidden"],
        intermediate_size=size["vis_inter"],
        num_hidden_layers=size["vis_layers"],
        num_attention_heads=size["vis_heads"],
        image_size=frame_size,
        patch_size=patch_size,
        num_channels=3,
        vision_use_head=False,
    )
    config = LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=IMAGE_ID,
        video_token_index=VIDEO_ID,
        vision_feature_select_strategy="full",
        vision_feature_layer=-2 if size.get("patch_embeddings") else -1,
        image_grid_pinpoints=[[frame_size, frame_size]],
        tie_word_embeddings=False,
    )
    return config


def build_pair_configs(tiny: bool = False):
    """(target_config, draft_config): same vocab, special ids and vision geometry."""
    target, draft = pair_sizes(tiny)
    return build_config(target), build_config(draft)


def pair_sizes(tiny: bool = False) -> tuple[dict, dict]:
    """(target_size, draft_size) dicts: the shipped pair's, or the tests' tiny ones."""
    return (TINY_TARGET, TINY_DRAFT) if tiny else (TARGET, DRAFT)


def build_model(config, seed: int = 0) -> LlavaOnevisionForConditionalGeneration:
    """A freshly initialised model (HF init, seeded), eval mode, with generation settings."""
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    gc = model.generation_config
    gc.bos_token_id = None
    gc.eos_token_id = EOS_ID
    gc.pad_token_id = PAD_ID
    gc.do_sample = False
    gc.max_new_tokens = 20
    return model.eval()


def param_count(config) -> dict[str, int]:
    """Parameter counts (total, text, vision, projector) without allocating weights."""
    with torch.device("meta"):
        model = LlavaOnevisionForConditionalGeneration(config)
    inner = model.model

    def count(m):
        return sum(p.numel() for p in m.parameters())

    return dict(
        total=count(model),
        text=count(inner.language_model) + count(model.lm_head),
        vision=count(inner.vision_tower),
        projector=count(inner.multi_modal_projector) + inner.image_newline.numel(),
    )


def grow_text_layers(model: LlavaOnevisionForConditionalGeneration, layers: int):
    """A copy of ``model`` whose text decoder has ``layers`` layers and computes the same function.

    New layers are interleaved after the existing ones (4 -> 8: old, new, old, new, ...); each
    copies the layer before it, with its attention output projection and MLP down projection set
    to zero, so it adds nothing to the residual stream until trained. Used to deepen a trained
    target (``scripts/train_micro.py --grow-layers``) instead of training a deep one from scratch.
    """
    text = model.config.text_config
    old = text.num_hidden_layers
    if layers < old:
        raise ValueError(f"cannot grow {old} layers to {layers}")
    config = copy.deepcopy(model.config)
    config.text_config.num_hidden_layers = layers
    types = getattr(text, "layer_types", None)
    if types:
        if len(set(types)) != 1:
            raise ValueError("growing needs one attention type in every layer")
        config.text_config.layer_types = [types[0]] * layers
    prefix = "model.language_model.layers."
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    old_layers = model.model.language_model.layers
    # Layer j of the grown decoder copies old layer source[j]; `fresh` layers start as identity.
    source = [i * old // layers for i in range(layers)]
    for j, i in enumerate(source):
        layer_state = old_layers[i].state_dict()
        if j > 0 and source[j - 1] == i:
            layer_state = {k: v.clone() for k, v in layer_state.items()}
            layer_state["self_attn.o_proj.weight"].zero_()
            layer_state["mlp.down_proj.weight"].zero_()
        for k, v in layer_state.items():
            state[f"{prefix}{j}.{k}"] = v
    return _rebuilt(model, config, state)


def read_patch_embeddings(model: LlavaOnevisionForConditionalGeneration):
    """A copy of ``model`` whose video tokens are made from the vision tower's patch embeddings.

    The SigLIP encoder keeps one layer and ``vision_feature_layer`` becomes -2 (the hidden state
    before that layer, LLaVA's own default index), so the layer's output is computed but not used;
    a stock config cannot select the patch embeddings of an encoder without layers. The point:
    encoder layers attend across the whole frame, so after them every token of a frame carries
    its objects (in this pair a token without a single object pixel told the draft nearly as much
    as one on the object); from the patch embeddings each video token carries only its own
    16 x 16 pixels and the language model has to look at the right tokens. Used by
    ``scripts/train_micro.py --patch-features`` (the model must then be trained further).
    """
    config = copy.deepcopy(model.config)
    config.vision_config.num_hidden_layers = 1
    config.vision_feature_layer = -2
    later_layer = re.compile(r"vision_tower\.(vision_model\.)?encoder\.layers\.[1-9]")
    state = {k: v for k, v in model.state_dict().items() if not later_layer.search(k)}
    return _rebuilt(model, config, state)


def _rebuilt(model, config, state: dict):
    """A new model of ``config`` holding exactly ``state``, with ``model``'s generation settings
    and dtype, in eval mode."""
    out = LlavaOnevisionForConditionalGeneration(config)
    out.generation_config = copy.deepcopy(model.generation_config)
    out.load_state_dict(state, strict=True)
    return out.to(next(model.parameters()).dtype).eval()
