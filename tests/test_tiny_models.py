"""tests/tiny_models.py: tiny random video-LLM pairs and processor-like inputs (CPU, fast)."""

import pytest
import torch

from tests import tiny_models as tm

QWEN = ("qwen2_5_vl", "qwen3_vl")
_PAIRS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with tm.single_threaded():
        yield


def _pair(family):
    if family not in _PAIRS:
        _PAIRS[family] = tm.make_pair(family)
    return _PAIRS[family]


def _greedy(model, inputs, n=8):
    out = model.generate(**inputs, do_sample=False, max_new_tokens=n)
    return out[0, inputs["input_ids"].shape[1] :]


def _out_len(model, inputs, n):
    return model.generate(**inputs, do_sample=False, max_new_tokens=n).shape[1]


def _max_run(tokens):
    best = cur = 1
    for a, b in zip(tokens, tokens[1:], strict=False):
        cur = cur + 1 if a == b else 1
        best = max(best, cur)
    return best


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_pair_generates(family):
    target, draft = _pair(family)
    for model in (target, draft):
        assert not model.training and not any(m.training for m in model.modules())
        assert model.device.type == "cpu" and model.dtype == torch.float32
        assert model.config._attn_implementation == "sdpa"
        assert model.config.text_config._attn_implementation == "sdpa"
        inputs = tm.make_inputs(family, model)
        length = inputs["input_ids"].shape[1]
        out = model.generate(**inputs, do_sample=False, max_new_tokens=8)
        assert out.shape == (1, length + 8)
        assert torch.equal(out[:, :length], inputs["input_ids"])
        assert int(out[0, length:].max()) < tm.NUM_TEXT_TOKENS  # specials are never generated
    assert target.config.text_config.vocab_size == draft.config.text_config.vocab_size
    assert target.lm_head.out_features == draft.lm_head.out_features == tm.VOCAB_SIZE
    for key in ("image_token_id", "video_token_id"):
        assert getattr(target.config, key) == getattr(draft.config, key)
    if family in QWEN:
        assert target.config.vision_start_token_id == draft.config.vision_start_token_id
        assert target.config.vision_end_token_id == draft.config.vision_end_token_id
    assert target.generation_config.eos_token_id == draft.generation_config.eos_token_id
    assert target.generation_config.pad_token_id == draft.generation_config.pad_token_id
    assert draft.num_parameters() < target.num_parameters()
    tc, dc = target.config.text_config, draft.config.text_config
    assert (tc.hidden_size, tc.num_attention_heads, tc.num_key_value_heads) == (64, 4, 2)
    assert tc.hidden_size // tc.num_attention_heads == 16
    assert dc.num_hidden_layers < tc.num_hidden_layers and dc.hidden_size <= tc.hidden_size


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_text_only_inputs_generate(family):
    target, _ = _pair(family)
    inputs = tm.make_inputs(family, target, video=False, text_before=4, text_after=3)
    assert "pixel_values_videos" not in inputs and inputs["input_ids"].shape == (1, 7)
    assert int(inputs["input_ids"].max()) < tm.NUM_TEXT_TOKENS
    with_video = tm.make_inputs(family, target, text_before=4, text_after=3)
    assert torch.equal(inputs["input_ids"][0, :4], with_video["input_ids"][0, :4])
    if family in QWEN:
        assert not inputs["mm_token_type_ids"].any()
    assert _out_len(target, inputs, 5) == 7 + 5


@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("family", tm.FAMILIES)
def test_inputs_match_processor_layout(family, frames):
    target, _ = _pair(family)
    inputs = tm.make_inputs(family, target, frames=frames, text_before=5, text_after=6, seed=3)
    ids = inputs["input_ids"][0]
    n_video = int((ids == tm.VIDEO_TOKEN_ID).sum())
    assert torch.equal(inputs["attention_mask"], torch.ones_like(inputs["input_ids"]))
    assert int(ids[:5].max()) < tm.NUM_TEXT_TOKENS and int(ids[-6:].max()) < tm.NUM_TEXT_TOKENS
    if family == "llava_onevision":
        assert set(inputs) == {"input_ids", "attention_mask", "pixel_values_videos"}
        assert inputs["pixel_values_videos"].shape == (1, frames, 3, 32, 32)
        assert n_video == frames * 16 + 1  # + the trailing newline slot
        assert ids.shape[0] == 5 + n_video + 6
        return
    keys = {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos"}
    keys.add("video_grid_thw")
    if family == "qwen2_5_vl":
        keys.add("second_per_grid_ts")
        assert inputs["second_per_grid_ts"].tolist() == [1.0]
    assert set(inputs) == keys
    assert inputs["video_grid_thw"].tolist() == [[frames, 8, 8]]
    assert inputs["pixel_values_videos"].shape == (frames * 64, 3 * 2 * 4 * 4)
    assert torch.equal(inputs["mm_token_type_ids"][0], (ids == tm.VIDEO_TOKEN_ID).long() * 2)
    assert n_video == frames * 16
    assert ids[5] == tm.VISION_START_TOKEN_ID and ids[-7] == tm.VISION_END_TOKEN_ID
    n_start = int((ids == tm.VISION_START_TOKEN_ID).sum())
    n_end = int((ids == tm.VISION_END_TOKEN_ID).sum())
    if family == "qwen2_5_vl":
        assert n_start == n_end == 1 and ids.shape[0] == 5 + 1 + n_video + 1 + 6
    else:  # nested: outer wrapper + one <vision_start> ... <vision_end> per frame
        assert n_start == n_end == frames + 1
        assert ids[6] == ord("<")  # the first frame's "<0.2 seconds>" timestamp text


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_forward_accepts_video_tokens(family):
    target, draft = _pair(family)
    for model in (target, draft):
        inputs = tm.make_inputs(family, model, frames=2)
        t, h, w = tm.video_token_layout(family, model, inputs)[2]
        with torch.no_grad():
            logits = model(**inputs).logits
            if family == "llava_onevision":
                feats = model.model.get_video_features(inputs["pixel_values_videos"])
                # 5.17: newline appended later in forward; 5.24: inside get_video_features
                assert feats.pooler_output.shape[1] in (t * h * w, t * h * w + 1)
            else:
                feats = model.model.get_video_features(
                    inputs["pixel_values_videos"], inputs["video_grid_thw"]
                )
                assert sum(f.shape[0] for f in feats.pooler_output) == t * h * w
        assert logits.shape == (1, inputs["input_ids"].shape[1], tm.VOCAB_SIZE)
        assert torch.isfinite(logits).all()
    # one placeholder short: the model's own check must fire
    bad = dict(inputs)
    ids = inputs["input_ids"].clone()
    ids[0, int((ids[0] == tm.VIDEO_TOKEN_ID).nonzero()[0])] = 1
    bad["input_ids"] = ids
    if "mm_token_type_ids" in bad:
        bad["mm_token_type_ids"] = (ids == tm.VIDEO_TOKEN_ID).long() * 2
    with pytest.raises(ValueError, match="do not match"), torch.no_grad():
        draft(**bad)


@pytest.mark.parametrize("frames", [1, 4])
@pytest.mark.parametrize("family", tm.FAMILIES)
def test_video_token_layout(family, frames):
    target, _ = _pair(family)
    inputs = tm.make_inputs(family, target, frames=frames, seed=1)
    ids = inputs["input_ids"][0]
    start, end, (t, h, w) = tm.video_token_layout(family, target, inputs)
    assert (t, h, w) == (frames, 4, 4)
    pos = tm.video_token_positions(family, target, inputs)
    assert pos.shape == (t, h, w)
    assert (ids[pos] == tm.VIDEO_TOKEN_ID).all()
    assert int(pos.flatten()[0]) == start and int(pos.flatten()[-1]) == end - 1
    n_video = int((ids == tm.VIDEO_TOKEN_ID).sum())
    assert ids[start - 1] != tm.VIDEO_TOKEN_ID
    if family == "llava_onevision":
        assert end - start == t * h * w and n_video == t * h * w + 1
        assert ids[end] == tm.VIDEO_TOKEN_ID and ids[end + 1] != tm.VIDEO_TOKEN_ID  # newline
    elif family == "qwen2_5_vl":
        assert end - start == t * h * w and n_video == t * h * w
        assert ids[start - 1] == tm.VISION_START_TOKEN_ID and ids[end] == tm.VISION_END_TOKEN_ID
    else:
        assert n_video == t * h * w
        for frame in pos.view(t, h * w):  # each frame: <vision_start> h*w tokens <vision_end>
            assert int(frame[-1] - frame[0]) == h * w - 1
            assert ids[frame[0] - 1] == tm.VISION_START_TOKEN_ID
            assert ids[frame[-1] + 1] == tm.VISION_END_TOKEN_ID
        gap = 6 + 2  # "<t.t seconds>" (6 tokens) + <vision_end> + <vision_start>
        assert end - start == t * h * w + (t - 1) * gap


@pytest.mark.parametrize("family", QWEN)
def test_rope_positions_follow_grid(family):
    target, _ = _pair(family)
    inputs = tm.make_inputs(family, target, frames=3)
    keys = ("mm_token_type_ids", "video_grid_thw", "attention_mask", "second_per_grid_ts")
    kwargs = {k: inputs[k] for k in keys if k in inputs}
    position_ids, deltas = target.model.get_rope_index(inputs["input_ids"], **kwargs)
    assert position_ids.shape == (3, 1, inputs["input_ids"].shape[1]) and deltas.shape == (1, 1)
    pos = tm.video_token_positions(family, target, inputs)
    t_pos, h_pos, w_pos = (position_ids[i, 0][pos] for i in range(3))
    rows = torch.arange(4).view(1, 4, 1).expand(3, 4, 4)
    cols = torch.arange(4).view(1, 1, 4).expand(3, 4, 4)
    frame_base = h_pos[:, :1, :1]
    assert torch.equal(h_pos - frame_base, rows) and torch.equal(w_pos - frame_base, cols)
    assert (t_pos == t_pos[:, :1, :1]).all()  # one temporal position per frame
    t_frames = t_pos[:, 0, 0]
    if family == "qwen2_5_vl":  # tokens_per_second 2 * second_per_grid_ts 1.0
        assert (t_frames - t_frames[0]).tolist() == [0, 2, 4]
    else:  # each frame starts a new group after its timestamp text
        assert (t_frames.diff() > 0).all()
    # forward with explicit 3-row positions equals the model's own computation
    with torch.no_grad():
        auto = target(**inputs).logits
        explicit = target(**inputs, position_ids=position_ids).logits
    torch.testing.assert_close(auto, explicit)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_greedy_outputs_not_degenerate(family):
    for model in _pair(family):
        inputs = tm.make_inputs(family, model)
        tokens = _greedy(model, inputs, 16).tolist()
        assert len(set(tokens)) >= 6, tokens
        assert _max_run(tokens) <= 4, tokens


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_output_depends_on_video(family):
    for model in _pair(family):
        changed = 0
        for seed in range(3):
            inputs = tm.make_inputs(family, model, seed=seed)
            other = dict(inputs)
            other["pixel_values_videos"] = tm.make_inputs(family, model, seed=seed + 100)[
                "pixel_values_videos"
            ]
            with torch.no_grad():
                a = model(**inputs).logits[0, -1]
                b = model(**other).logits[0, -1]
            assert not torch.allclose(a, b)
            changed += not torch.equal(_greedy(model, inputs), _greedy(model, other))
        assert changed >= 1


def test_make_pair_is_deterministic_and_draft_differs():
    family = "qwen2_5_vl"
    a_target, a_draft = tm.make_pair(family, seed=0)
    b_target, _ = tm.make_pair(family, seed=0)
    c_target, _ = tm.make_pair(family, seed=1)
    for (name, p), q in zip(a_target.named_parameters(), b_target.parameters(), strict=True):
        assert torch.equal(p, q), name
    emb = a_target.get_input_embeddings().weight
    assert not torch.equal(emb, c_target.get_input_embeddings().weight)
    assert not torch.equal(emb[:, :32], a_draft.get_input_embeddings().weight)
    x = tm.make_inputs(family, a_target, seed=5)
    y = tm.make_inputs(family, a_target, seed=5)
    assert all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_copy_draft_matches_target(family):
    target, _ = _pair(family)
    copy = tm.make_copy_draft(target)
    for (name, p), q in zip(target.named_parameters(), copy.parameters(), strict=True):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr(), name
    assert not copy.training
    inputs = tm.make_inputs(family, target, seed=2)
    assert torch.equal(_greedy(target, inputs), _greedy(copy, inputs))


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_set_eos_stops_generation(family):
    model = tm.make_copy_draft(_pair(family)[0])
    inputs = tm.make_inputs(family, model)
    length = inputs["input_ids"].shape[1]
    tokens = _greedy(model, inputs, 8).tolist()
    eos = tokens[3]
    first = tokens.index(eos)
    tm.set_eos(model, eos)
    assert model.generation_config.eos_token_id == eos
    assert model.generation_config.pad_token_id == tm.PAD_TOKEN_ID
    out = model.generate(**inputs, do_sample=False, max_new_tokens=8)
    assert out.shape == (1, length + first + 1) and int(out[0, -1]) == eos
    tm.set_eos(model, None)
    assert model.generation_config.eos_token_id == tm.GENERATION_EOS
    assert _out_len(model, inputs, 8) == length + 8


@pytest.mark.parametrize("family", QWEN)
def test_qwen_needs_mm_token_type_ids(family):
    target, _ = _pair(family)
    inputs = tm.make_inputs(family, target)
    bare = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    # without it, M-RoPE falls back to 1-D positions (Qwen2.5-VL) or raises (Qwen3-VL)
    if family == "qwen3_vl":
        with pytest.raises(ValueError, match="mm_token_type_ids"), torch.no_grad():
            target(**bare)
    else:
        with torch.no_grad():
            assert not torch.allclose(target(**inputs).logits, target(**bare).logits)


def test_bfloat16_pair_is_finite():
    target, draft = tm.make_pair("qwen3_vl", dtype=torch.bfloat16)
    for model in (target, draft):
        assert model.dtype == torch.bfloat16
        assert model.model.language_model.rotary_emb.inv_freq.dtype == torch.float32
        inputs = tm.make_inputs("qwen3_vl", model, frames=2)
        assert inputs["pixel_values_videos"].dtype == torch.bfloat16
        with torch.no_grad():
            assert torch.isfinite(model(**inputs).logits).all()


def test_bad_arguments():
    target, _ = _pair("qwen3_vl")
    with pytest.raises(ValueError, match="unknown family"):
        tm.make_pair("llava")
    with pytest.raises(ValueError, match="not llava_onevision"):
        tm.make_inputs("llava_onevision", target)
    with pytest.raises(ValueError, match="no video"):
        tm.video_token_layout("qwen3_vl", target, tm.make_inputs("qwen3_vl", target, video=False))
