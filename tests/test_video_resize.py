"""Videos of another size than the model's: the embedded pair's processor resizes them.

The micro pair's video processor (``specvlm/assets/micro/*/processor_config.json``) resizes
frames to 64x64 (``do_resize``, bicubic, antialiased). Without torchvision the resize is
:func:`specvlm.tools.video_input.resize_video`, in torch: in the stock processor class the
stand-ins give (:mod:`specvlm.micro.processor`; the vLLM tests serve through it) and in
:class:`~specvlm.tools.video_input.VideoPrompter` (the demo's inputs). It was checked equal to
torchvision 0.28's resize, and the whole processor equal to the stock one with torchvision's
code, outside this suite (torchvision does not install beside the CPU torch); here: its
definition, 64x64 frames unchanged, and a 128x128 and a 48x80 video answered by the target.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from specvlm.micro import data
from specvlm.micro import processor as micro_processor
from specvlm.micro.clips import make_example
from specvlm.tools.common import EMBEDDED
from specvlm.tools.video_input import InputError, VideoPrompter, _torchvision_works, resize_video


def _frames(video: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(video).permute(0, 3, 1, 2).contiguous()  # uint8 TCHW


def _video(frames: torch.Tensor) -> np.ndarray:
    return frames.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def clip():
    """A held-out question on a 64x64 clip (three shapes to describe), the same clip upscaled 2x
    (128x128) and resized to 48x80 (not square)."""
    video, question, answer = make_example(data.EVAL_SEED_BASE + 4, "caption")
    assert video.shape[1:3] == (64, 64)
    big = np.repeat(np.repeat(video, 2, axis=1), 2, axis=2)
    wide = _video(resize_video(_frames(video), 48, 80, 2))
    return {"video": video, "question": question, "answer": answer, "128x128": big, "48x80": wide}


@pytest.fixture(scope="module")
def target():
    from transformers import AutoModelForImageTextToText

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield AutoModelForImageTextToText.from_pretrained(EMBEDDED / "target").eval()
    torch.set_num_threads(threads)


def test_frames_of_the_size_asked_for_come_back_unchanged():
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    assert resize_video(x, 64, 64) is x
    assert resize_video(x.float(), 64, 64, 2).dtype == torch.float32


@pytest.mark.parametrize(
    "shape", [(8, 3, 128, 128), (8, 3, 48, 80), (2, 3, 20, 30), (4, 3, 65, 63)]
)
def test_uint8_bicubic_is_torchs_antialiased_bicubic(shape):
    """On the CPU, uint8 frames resize natively, as torchvision resizes them there."""
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = resize_video(x, 64, 64)
    want = F.interpolate(x, size=(64, 64), mode="bicubic", align_corners=False, antialias=True)
    assert got.dtype == torch.uint8 and torch.equal(got, want)
    videos = torch.stack([x, x.flip(0)])  # [B, T, C, H, W], as the processor stacks them
    assert torch.equal(resize_video(videos, 64, 64)[1], want.flip(0))


def test_float_frames_and_other_modes():
    x = torch.rand(2, 3, 40, 50, generator=torch.Generator().manual_seed(1))
    want = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(resize_video(x, 64, 64, 2), want)
    nearest = resize_video((x * 255).to(torch.uint8), 64, 64, 0)
    assert torch.equal(
        nearest, F.interpolate((x * 255).to(torch.uint8), (64, 64), mode="nearest-exact")
    )
    grey = torch.full((2, 3, 128, 96), 77, dtype=torch.uint8)
    for code in (0, 2, 3):
        assert torch.equal(
            resize_video(grey, 64, 64, code), torch.full((2, 3, 64, 64), 77, dtype=torch.uint8)
        )
    with pytest.raises(InputError, match="resample 1 is not supported without torchvision"):
        resize_video(grey, 64, 64, 1)


def test_the_embedded_processors_resize(clip):
    """Both the stock processor (loaded from the embedded files) and the demo's prompter: a
    128x128 and a 48x80 video become 64x64 pixels, the same from both, with the 129 video tokens
    of 8 frames; a 64x64 clip's pixels are the ones the pair was trained on."""
    config = json.loads((EMBEDDED / "target" / "processor_config.json").read_text())
    assert config["video_processor"]["do_resize"] is True
    processor = micro_processor.load_processor(EMBEDDED / "target")
    prompter = VideoPrompter(str(EMBEDDED / "target"), _config())
    for name in ("video", "128x128", "48x80"):
        ours = micro_processor.video_inputs(processor, clip[name], clip["question"])
        theirs = prompter(clip[name], clip["question"])
        assert ours["pixel_values_videos"].shape == (1, 8, 3, 64, 64)
        assert int((ours["input_ids"] == 4).sum()) == micro_processor.num_video_tokens(8) == 129
        for key in ("input_ids", "pixel_values_videos"):
            assert torch.equal(ours[key], theirs[key]), (name, key)
    same = micro_processor.video_inputs(processor, clip["video"], clip["question"])[
        "pixel_values_videos"
    ]
    assert torch.equal(same[0], data.pixels(clip["video"]))  # unchanged: the demo's answers too


def _config():
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(EMBEDDED / "target")


def test_the_target_answers_a_128x128_and_a_48x80_video(clip, target):
    prompter = VideoPrompter(str(EMBEDDED / "target"), target.config)

    def answer(video):
        inputs = prompter(video, clip["question"])
        with torch.no_grad():
            out = target.generate(**inputs, do_sample=False, max_new_tokens=16)
        return prompter.tokenizer.decode(
            out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        ).strip()

    assert answer(clip["video"]) == clip["answer"]
    assert answer(clip["128x128"]) == clip["answer"]
    assert answer(clip["48x80"]) == clip["answer"]


def test_a_processor_that_does_not_resize_refuses_another_size_in_one_line(clip, tmp_path):
    """A checkpoint whose video processor says ``do_resize: false`` (as the embedded pair's
    once did): frames of its size pass, others are refused before the model, in one line."""
    if _torchvision_works():
        pytest.skip("with torchvision, the checkpoint's own processor makes the inputs")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(EMBEDDED / "target" / name, tmp_path / name)
    config = json.loads((EMBEDDED / "target" / "processor_config.json").read_text())
    config["video_processor"]["do_resize"] = False
    (tmp_path / "processor_config.json").write_text(json.dumps(config))
    prompter = VideoPrompter(str(tmp_path), _config())
    assert prompter(clip["video"], clip["question"])["pixel_values_videos"].shape == (
        1,
        8,
        3,
        64,
        64,
    )
    with pytest.raises(InputError) as info:
        prompter(clip["48x80"], clip["question"])
    message = str(info.value)
    assert "\n" not in message
    assert "frames are 48x80" in message and "takes 64x64 frames" in message
