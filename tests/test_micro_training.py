"""Micro pair: tokenizer / processor / data agree, configs, and scripts/train_micro.py --tiny."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from specvlm.micro import data, model, processor, tokenizer
from specvlm.micro.clips import make_clip, make_example, make_question

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tokenizer_round_trip():
    tok = tokenizer.build_tokenizer()
    _, question, answer = make_example(4)
    text = f"{question} {answer}"
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert tok("<video><video>")["input_ids"] == [tokenizer.VIDEO_ID] * 2
    assert tok.pad_token_id == tokenizer.PAD_ID and tok.eos_token_id == tokenizer.EOS_ID


def test_processor_video_output_and_round_trip(tmp_path):
    proc = processor.build_processor()
    video, _ = make_clip(0)
    out = processor.video_inputs(proc, video, "what colour is the square ?")
    pv = out["pixel_values_videos"]
    assert pv.shape == (1, 8, 3, 64, 64) and pv.dtype == torch.float32
    assert torch.equal(pv[0], data.pixels(video))
    n_video = int((out["input_ids"] == tokenizer.VIDEO_ID).sum())
    assert n_video == processor.num_video_tokens(8) == 129
    proc.save_pretrained(tmp_path)
    loaded = processor.load_processor(tmp_path)
    assert type(loaded).__name__ == "LlavaOnevisionProcessor"
    again = processor.video_inputs(loaded, video, "what colour is the square ?")
    assert all(torch.equal(out[k], again[k]) for k in out)


def test_training_conversation_matches_processor():
    """data.conversation() builds exactly the processor's tokens for a multi-turn chat."""
    proc = processor.build_processor()
    video, facts = make_clip(7)
    rng = np.random.default_rng(0)
    turns = [make_question(facts, t, rng) for t in ("caption", "count", "motion")]
    messages = []
    for i, (q, a) in enumerate(turns):
        content = ([{"type": "video"}] if i == 0 else []) + [{"type": "text", "text": q}]
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
    text = proc.apply_chat_template(messages, tokenize=False)
    out = proc(text=text, videos=[video], return_tensors="pt")
    ids, labels = data.conversation(turns)
    assert out["input_ids"][0].tolist() == ids
    answer_ids = [x for x in labels if x != data.IGNORE]
    expected = sum((data.word_ids(a) + [tokenizer.EOS_ID] for _, a in turns), [])
    assert answer_ids == expected
    # the first turn alone is the evaluation prompt + answer
    first = proc(text=processor.prompt(proc, turns[0][0]), videos=[video])["input_ids"][0]
    assert ids[: len(first)] == list(first)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_questions_equal_separate_prompts(one_thread, attn):
    """A packed training row computes each question exactly as its own prompt would, with
    either attention implementation the training script offers (eager gets the additive mask)."""
    m = model.build_model(model.build_config(model.TINY_TARGET), seed=0)
    m.set_attn_implementation(attn)
    video, facts = make_clip(11)
    rng = np.random.default_rng(1)
    turns = [make_question(facts, t, rng) for t in ("caption", "colour", "exists")]
    short = [make_question(facts, "count", rng)]
    pix = data.pixels(video)
    ids = data.packed(turns)[0]
    batch = data.collate([(*data.packed(turns), pix), (*data.packed(short), pix)])
    assert batch["attention_mask"].shape == (2, 1, len(ids), len(ids))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if attn == "eager":
        inputs["attention_mask"] = data.additive_mask(batch["attention_mask"])
    with torch.no_grad():
        packed_logits = m(**inputs).logits
        for row, qs in ((0, turns), (1, short)):
            seg = torch.tensor(data.packed(qs)[3])
            for j, turn in enumerate(qs, start=1):
                single, _ = data.conversation([turn])
                ref = m(
                    input_ids=torch.tensor([single]),
                    pixel_values_videos=pix[None],
                ).logits[0]
                got = packed_logits[row, : len(seg)][(seg == 0) | (seg == j)]
                torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_eager_attention_ignores_a_boolean_mask(one_thread):
    """Why the training script converts the packed mask for eager attention: given the boolean
    mask as it is, eager attention adds it to the scores (True = +1) and every token sees the
    whole row, answers of later questions included."""
    m = model.build_model(model.build_config(model.TINY_TARGET), seed=0)
    m.set_attn_implementation("eager")
    video, facts = make_clip(12)
    rng = np.random.default_rng(2)
    turns = [make_question(facts, t, rng) for t in ("caption", "colour")]
    batch = data.collate([(*data.packed(turns), data.pixels(video))])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    mask = data.additive_mask(batch["attention_mask"])
    with torch.no_grad():
        leaky = m(**inputs).logits
        right = m(**dict(inputs, attention_mask=mask)).logits
    assert not torch.allclose(leaky, right, atol=1e-3)
    assert mask.dtype == torch.float32
    assert torch.equal(mask == 0, batch["attention_mask"])
    with pytest.raises(ValueError, match="boolean 4-D"):
        data.additive_mask(mask)


def test_pair_configs_share_vocab_and_geometry():
    target, draft = model.build_pair_configs()
    for a, b in ((target, draft),):
        assert a.text_config.vocab_size == b.text_config.vocab_size == len(tokenizer.vocabulary())
        assert a.video_token_index == b.video_token_index == tokenizer.VIDEO_ID
        assert a.image_token_index == b.image_token_index == tokenizer.IMAGE_ID
        for key in ("image_size", "patch_size"):
            assert getattr(a.vision_config, key) == getattr(b.vision_config, key)
    assert (target.vision_config.image_size, target.vision_config.patch_size) == (64, 8)
    assert draft.text_config.num_hidden_layers == 1
    for config in (target, draft):  # video tokens are patch embeddings (see read_patch_embeddings)
        assert config.vision_feature_layer == -2 and config.vision_config.num_hidden_layers == 1
    nt, nd = model.param_count(target)["total"], model.param_count(draft)["total"]
    assert 4_000_000 <= nt <= 20_000_000
    assert 200_000 <= nd <= 1_000_000 and nt >= 8 * nd


def test_train_script_tiny_end_to_end(tmp_path, one_thread):
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "micro"
    start = time.time()
    script = str(ROOT / "scripts" / "train_micro.py")
    cmd = [
        sys.executable,
        script,
        "--tiny",
        "--out",
        str(out),
        "--model",
        "both",
        "--threads",
        "1",
        "--text-layers",
        "1",
    ]
    res = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    elapsed = time.time() - start
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert elapsed < 60, f"--tiny took {elapsed:.0f} s"

    video, question, answer = make_example(data.EVAL_SEED_BASE + 3)
    vocab_sizes = set()
    for name in ("target", "draft"):
        path = out / name
        report = json.loads((path / "train_report.json").read_text())
        assert report["steps"] == 20 and set(report["eval"]) == {"video", "noise"}
        proc = processor.load_processor(path)  # AutoProcessor.from_pretrained
        m = AutoModelForImageTextToText.from_pretrained(path)
        assert m.config.text_config.num_hidden_layers == 1  # --text-layers
        assert m.config.vision_feature_layer == -2  # fresh models read patch embeddings
        assert type(m).__name__ == "LlavaOnevisionForConditionalGeneration"
        vocab_sizes.add(m.config.text_config.vocab_size)
        inputs = processor.video_inputs(proc, video, question)
        with torch.no_grad():
            gen = m.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert gen.shape[0] == 1 and inputs["input_ids"].shape[1] < gen.shape[1]
        assert torch.equal(gen[0, : inputs["input_ids"].shape[1]], inputs["input_ids"][0])
        assert isinstance(proc.tokenizer.decode(gen[0], skip_special_tokens=True), str)
    assert len(vocab_sizes) == 1

    # deepen the trained tiny target (patch features already: the flag keeps them), train 2 steps
    grown = tmp_path / "grown"
    cmd = [
        sys.executable,
        script,
        "--tiny",
        "--out",
        str(grown),
        "--model",
        "target",
        "--threads",
        "1",
        "--init",
        str(out),
        "--grow-layers",
        "3",
        "--patch-features",
        "--steps",
        "2",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    m = AutoModelForImageTextToText.from_pretrained(grown / "target")
    assert m.config.text_config.num_hidden_layers == 3
    assert m.config.vision_feature_layer == -2


def test_pair_recipe_runs_on_tiny_models(tmp_path):
    """scripts/train_pair.sh (the shipped pair's whole training) with --tiny --steps 2: every run
    of the recipe parses and trains, in order, and leaves a 1-layer draft and a target grown
    from 1 to 4 to 8 text layers."""
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "pair"
    res = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "train_pair.sh"),
            str(out),
            "--tiny",
            "--steps",
            "2",
            "--threads",
            "1",
            "--eval-per-type",
            "1",
            "--generate-check",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "trained the pair in" in res.stdout
    layers = {}
    for path in (
        out / "draft",
        out / "stage-a" / "target",
        out / "stage-b" / "target",
        out / "target",
    ):
        report = json.loads((path / "train_report.json").read_text())
        assert report["steps"] == 2
        m = AutoModelForImageTextToText.from_pretrained(path)
        layers[path.relative_to(out).as_posix()] = m.config.text_config.num_hidden_layers
    assert layers == {"draft": 1, "stage-a/target": 1, "stage-b/target": 4, "target": 8}
    grown = json.loads((out / "target" / "train_report.json").read_text())["args"]
    assert grown["init"] == str(out / "stage-b") and grown["grow_layers"] == 8


def test_grow_text_layers_keeps_the_function(one_thread):
    small = model.build_model(model.build_config(model.TINY_TARGET), seed=3)  # 2 layers
    for p in small.parameters():  # HF init leaves some tensors at exactly 0 / 1: perturb all
        p.data += 0.02 * torch.randn_like(p)
    video, question, _ = make_example(5)
    inputs = processor.video_inputs(processor.build_processor(), video, question)
    grown = model.grow_text_layers(small, 5)
    layers = grown.model.language_model.layers
    assert grown.config.text_config.num_hidden_layers == len(layers) == 5
    assert grown.config.text_config.layer_types == ["full_attention"] * 5
    fresh = [j for j, layer in enumerate(layers) if not layer.mlp.down_proj.weight.any()]
    assert fresh == [1, 2, 4]  # sources 0 0 0 1 1 -> old 0, new, new, old 1, new
    for j in fresh:
        assert not layers[j].self_attn.o_proj.weight.any()
    with torch.no_grad():
        torch.testing.assert_close(
            grown(**inputs).logits, small(**inputs).logits, atol=1e-5, rtol=1e-5
        )
        before = grown.model.language_model.layers[1].self_attn.q_proj.weight.clone()
        small.model.language_model.layers[0].self_attn.q_proj.weight.add_(1.0)
        assert torch.equal(grown.model.language_model.layers[1].self_attn.q_proj.weight, before)
    with pytest.raises(ValueError, match="cannot grow"):
        model.grow_text_layers(small, 1)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--grow-layers", "3"], "--grow-layers needs --init"),
        (["--patch-features"], "--patch-features needs --init"),
        (["--text-layers", "2", "--init", "/nonexistent"], "--text-layers: a positive count"),
        (["--text-layers", "0"], "--text-layers: a positive count"),
        (["--seed", "20"], "--seed: 0 to 19"),
        (["--seed", "-1"], "--seed: 0 to 19"),
    ],
)
def test_bad_training_flags_are_refused(flags, message):
    script = str(ROOT / "scripts" / "train_micro.py")
    res = subprocess.run(
        [sys.executable, script, "--out", "/nonexistent", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert res.returncode == 2 and message in res.stderr, res.stderr


def _video_tokens(m, video: np.ndarray) -> torch.Tensor:
    """[frames * 16, hidden] video tokens of `m` (without the newline token)."""
    x = data.pixels(video)[None]
    features = m.model.get_video_features(
        x,
        vision_feature_layer=m.config.vision_feature_layer,
        vision_feature_select_strategy=m.config.vision_feature_select_strategy,
    ).pooler_output
    return features[0, :-1]


def test_patch_features_make_each_token_local(one_thread):
    size = dict(model.TINY_TARGET, vis_layers=3, patch_embeddings=False)
    deep = model.build_model(model.build_config(size), seed=4)
    for p in deep.parameters():
        p.data += 0.02 * torch.randn_like(p)
    local = model.read_patch_embeddings(deep)
    assert local.config.vision_config.num_hidden_layers == 1
    assert local.config.vision_feature_layer == -2
    assert deep.config.vision_config.num_hidden_layers == 3  # the input is not changed
    for name, p in local.named_parameters():  # every weight kept is the original's
        assert torch.equal(p, deep.get_parameter(name)), name
    video = make_clip(7)[0]
    changed = video.copy()
    changed[2, 16:32, 32:48] = 255  # the pixels of token (row 1, col 2) of frame 2
    token = 2 * 16 + 1 * 4 + 2
    with torch.no_grad():
        for m, only_that_token in ((local, True), (deep, False)):
            moved = (_video_tokens(m, changed) - _video_tokens(m, video)).abs().amax(-1) > 1e-6
            frame_2 = moved[32:48]
            assert moved[token]
            assert not moved[:32].any() and not moved[48:].any()  # frames never mix
            # patch features: nothing else in frame 2 moves; the encoder mixes the whole frame
            assert int(frame_2.sum()) == (1 if only_that_token else 16)


def test_torchvision_stand_ins_are_undone():
    import transformers

    names = ("VideoProcessorMixin", "BaseVideoProcessor", "LlavaOnevisionVideoProcessor")
    before = {n: transformers.__dict__.get(n) for n in names}
    processor.build_processor()
    after = {n: transformers.__dict__.get(n) for n in before}
    assert after == before


def test_held_out_clips_of_demo_and_bench():
    a, b = data.held_out_clip(0), data.held_out_clip(1)
    assert a.shape == (8, 64, 64, 3) and not np.array_equal(a, b)
    assert np.array_equal(a, data.held_out_clip(0))
    seed = data._DEMO_SEED_BASE
    assert seed >= data.EVAL_SEED_BASE  # above every training seed
    assert np.array_equal(data.held_out_clip(2, frames=4), make_clip(seed + 2, frames=4)[0])
    with pytest.raises(ValueError, match=">= 0"):
        data.held_out_clip(-1)
