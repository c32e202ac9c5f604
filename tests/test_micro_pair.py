"""The shipped micro pair (specvlm/assets/micro): loads like a hub checkpoint, is small, knows
its task, and SpecVLM reproduces its greedy answers."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer

import specvlm
from specvlm.micro import processor as micro_processor
from specvlm.micro.clips import make_example
from specvlm.micro.data import EVAL_SEED_BASE
from specvlm.tools.common import EMBEDDED
from specvlm.tools.video_input import VideoPrompter


@pytest.fixture(scope="module")
def pair():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    target = AutoModelForImageTextToText.from_pretrained(EMBEDDED / "target").eval()
    draft = AutoModelForImageTextToText.from_pretrained(EMBEDDED / "draft").eval()
    yield target, draft, VideoPrompter(str(EMBEDDED / "target"), target.config)
    torch.set_num_threads(threads)


def test_files_are_small_and_standard():
    total = 0
    for name in ("target", "draft"):
        files = set(os.listdir(EMBEDDED / name))
        assert {
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "processor_config.json",
        } <= files
        total += sum(os.path.getsize(EMBEDDED / name / f) for f in files)
    assert total <= 40 * 2**20


def test_loads_through_auto_classes(pair):
    target, draft, _ = pair
    assert type(target).__name__ == type(draft).__name__ == "LlavaOnevisionForConditionalGeneration"
    n_t = sum(p.numel() for p in target.parameters())
    n_d = sum(p.numel() for p in draft.parameters())
    assert 4e6 < n_t < 2e7 and n_d * 10 <= n_t
    tok = AutoTokenizer.from_pretrained(EMBEDDED / "target")
    assert tok.vocab_size == target.config.text_config.vocab_size
    proc = micro_processor.load_processor(EMBEDDED / "target")  # AutoProcessor.from_pretrained
    assert type(proc).__name__ == "LlavaOnevisionProcessor"


def test_target_answers_held_out_count_questions(pair):
    target, _, prompter = pair
    right = 0
    for i in range(10):
        video, question, answer = make_example(EVAL_SEED_BASE + 900 + i, "count")
        inputs = prompter(video, question)
        with torch.no_grad():
            out = target.generate(**inputs, do_sample=False, max_new_tokens=6)
        text = prompter.tokenizer.decode(
            out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        right += text.strip() == answer
    assert right >= 8, f"{right}/10 held-out count questions answered exactly"


@pytest.mark.parametrize("qtype", ["caption", "colour"])
def test_speculative_answer_is_identical(pair, qtype):
    target, draft, prompter = pair
    video, question, _ = make_example(EVAL_SEED_BASE + 950, qtype)
    inputs = prompter(video, question)
    with torch.no_grad():
        ref = target.generate(**inputs, do_sample=False, max_new_tokens=16)
    sd = specvlm.accelerate((target, draft), drop_rate=0.9)
    assert sd.generate(**inputs, max_new_tokens=16).tolist() == ref.tolist()
    assert sd.last_stats.kept_video_tokens == 12 or sd.last_stats.new_tokens == 1


def test_micro_eval_runs(pair):
    """bench/micro_eval.py (the tables of docs/micro.md), on two clips: every row present and
    every SpecVLM output identical to the target's (the script raises otherwise)."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = repo
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(repo, "bench", "micro_eval.py"),
            "--clips",
            "2",
            "--depths",
            "2",
            "--random-seeds",
            "1",
            "--repeats",
            "1",
            "--max-new-tokens",
            "8",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=repo,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for row in (
        "| two_stage |",
        "| random (mean of 1 seeds) |",
        "object oracle: most covered",
        "object oracle: each object in turn",
        "all video tokens (drop 0)",
        "random tokens without object pixels (mean of 1 seeds)",
        "| mean of layers (the score) |",
        "| assisted generation",
    ):
        assert row in proc.stdout
    lines = proc.stdout.splitlines()
    ends = ("| True |", "| False |")
    speed_rows = [line for line in lines if line.startswith("| 2 |") and line.endswith(ends)]
    assert len(speed_rows) == 2 and all(line.endswith("| True |") for line in speed_rows)


def test_micro_eval_refuses_unknown_tables():
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(repo, "bench", "micro_eval.py")
    proc = subprocess.run(
        [sys.executable, script, "--tables", "selectors,bogus"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": repo},
    )
    assert proc.returncode == 2 and "--tables: choose from" in proc.stderr
