"""``specvlm eval`` (specvlm/eval/): prompts and scoring, every benchmark's reader on fixtures in
its shipped format (and its one-line errors on broken ones), the run end to end on the embedded
pair (identical answers, outputs, resuming), and the lmms-eval request helpers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from specvlm.eval import datasets, results
from specvlm.eval.benchmarks import BENCHMARKS, Protocol, benchmark_samples, select
from specvlm.eval.fixtures import FIXTURE_BENCHMARKS, write_fixture
from specvlm.eval.lmms_requests import cut_at_stops, describe, sampling_of, video_of
from specvlm.eval.samples import Sample, answer_letter, choice_prompt, score, strip_label
from specvlm.tools import cli
from specvlm.tools.common import ToolError

FIXTURE_SAMPLES = 3
# the fixtures' videos and parquet files are written with PyAV and pyarrow, which the GPU
# machines' image (scripts/test_gpu_image.sh) does not have; the main suite has both
NEEDS_FILES = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("av", "pyarrow")),
    reason="writing the benchmark fixtures needs PyAV and pyarrow (not in this environment)",
)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixtures")
    return {
        name: write_fixture(str(root / name), name, FIXTURE_SAMPLES, frames=8)
        for name in FIXTURE_BENCHMARKS
    }


# --- prompts and scoring ----------------------------------------------------------------------


def test_choice_prompt_labels_options_and_ends_with_the_post_prompt():
    prompt, letters = choice_prompt("Which one?", ["A. red", "(B) blue", "green"], "letter")
    assert letters == "ABC"
    assert prompt.splitlines() == [
        "Which one?",
        "A. red",
        "B. blue",
        "C. green",
        "Answer with the option's letter from the given choices directly.",
    ]
    assert choice_prompt("q", ["x", "y"], "explain")[0].endswith("then explain why.")
    with pytest.raises(ValueError, match="answer style"):
        choice_prompt("q", ["x"], "essay")
    with pytest.raises(ValueError, match="1 to 26"):
        choice_prompt("q", [], "letter")


@pytest.mark.parametrize(
    "answer, letter",
    [("B", "B"), ("(C) because", "C"), ("Answer: A.", "A"), ("The answer is D", "D"),
     ("I think so", None), ("E", None), ("BC", None),
     ("A man picks up the cup, so the answer is C.", "C"), ("C because the man left", "C"),
     ("A. The man", "A"), ("Option (B), since", "B"), ("A dog runs; B", "B")],
)  # fmt: skip
def test_answer_letter_takes_the_first_standalone_option_letter(answer, letter):
    assert answer_letter(answer, "ABCD") == letter


def test_score_by_kind():
    choice = Sample("1", "q", "v.mp4", "B", "ABCD")
    assert score(choice, "B. red") == 1.0 and score(choice, "A") == 0.0
    assert score(choice, "no idea") == 0.0
    assert score(Sample("2", "q", "v.mp4", "a caption"), "a caption") is None  # needs a judge
    assert score(Sample("3", "q", 4, "a red square ."), "a red square .") == 1.0
    assert score(Sample("4", "q", 4, "a red square ."), "a red circle .") == 0.0
    assert strip_label("(A) text", "A") == "text" and strip_label("A: text", "A") == "text"
    assert strip_label("U.S. Army", "A") == "U.S. Army"  # a text that starts like a label
    assert strip_label("B. text", "A") == "B. text"


# --- the readers, on fixtures in each dataset's format ----------------------------------------


@NEEDS_FILES
@pytest.mark.parametrize("name", FIXTURE_BENCHMARKS)
def test_each_reader_reads_its_fixture(fixtures, name):
    samples = benchmark_samples(name, fixtures[name], "explain", frames=8)
    expected = 7 if name == "mlvu" else FIXTURE_SAMPLES  # one file per MLVU task, each non-empty
    assert len(samples) == expected
    assert len({s.id for s in samples}) == len(samples)
    for s in samples:
        assert os.path.isfile(s.video)
        if name == "videodetailcaption":
            assert not s.choice and s.reference and s.prompt
        else:
            assert s.choice and s.reference in s.letters
            assert s.prompt.count("\n") == len(s.letters) + 1  # question, options, post-prompt
        assert (s.segment is not None) == (name == "mvbench")


@NEEDS_FILES
def test_the_readers_find_the_right_option(fixtures):
    """The letter of the right answer points at the right answer's text, in every format."""
    for name in ("mvbench", "longvideobench", "videomme", "lvbench", "mlvu"):
        for s in benchmark_samples(name, fixtures[name], "letter", frames=8):
            lines = s.prompt.splitlines()
            right = lines[1 + s.letters.index(s.reference)]
            question = lines[0]
            kind = "colour" if "colour" in question else "count" if "many" in question else None
            assert right.startswith(f"{s.reference}. ")
            if kind == "count":
                assert right.split(". ", 1)[1] in ("one", "two", "three", "four", "five")


def test_protocol_selection_limits_and_shuffles():
    rows = list(range(10))
    assert select(rows, Protocol(), None, 0) == rows
    assert select(rows, Protocol(samples=3), None, 0) == [0, 1, 2]
    assert select(rows, Protocol(samples=3), 5, 0) == [0, 1, 2, 3, 4]
    shuffled = select(rows, Protocol(samples=4, shuffle=True), None, 42)
    assert len(shuffled) == 4 and shuffled != [0, 1, 2, 3]
    assert shuffled == select(rows, Protocol(samples=4, shuffle=True), None, 42)
    assert BENCHMARKS["videodetailcaption"].protocol == Protocol(samples=100, shuffle=True)


def _edit_json(path, edit):
    with open(path) as f:
        rows = json.load(f)
    edit(rows)
    with open(path, "w") as f:
        json.dump(rows, f)


@NEEDS_FILES
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda rows: rows[0].pop("candidates"), "row 0 has no 'candidates'"),
        (lambda rows: rows[0].update(candidates="red"), "'candidates' is a str, expected list"),
        (lambda rows: rows[0].update(answer="purple"), "is not one of its candidates"),
        (lambda rows: rows[0].update(start=5.0, end=1.0), "bad start/end"),
        (lambda rows: rows.clear(), "holds no rows"),
    ],
)
def test_a_malformed_mvbench_row_is_named(fixtures, tmp_path, edit, message):
    import shutil

    data = shutil.copytree(fixtures["mvbench"], tmp_path / "mvbench")
    _edit_json(data / "json" / "action_sequence.json", edit)
    with pytest.raises(ToolError, match=message) as err:
        benchmark_samples("mvbench", str(data), "letter")
    assert "\n" not in str(err.value) and "action_sequence.json" in str(err.value)


@NEEDS_FILES
def test_missing_and_broken_files_are_one_line_errors(fixtures, tmp_path):
    import shutil

    with pytest.raises(ToolError, match=r"lvb_val.json not found"):
        benchmark_samples("longvideobench", str(tmp_path), "letter")
    with pytest.raises(ToolError, match=r"no videomme/test-\*.parquet under"):
        benchmark_samples("videomme", str(tmp_path), "letter")
    data = shutil.copytree(fixtures["longvideobench"], tmp_path / "lvb")
    (data / "lvb_val.json").write_text("[{")
    with pytest.raises(ToolError, match="is not valid JSON"):
        benchmark_samples("longvideobench", str(data), "letter")
    data = shutil.copytree(fixtures["videomme"], tmp_path / "vmme")
    parquet = next((data / "videomme").iterdir())
    parquet.write_bytes(b"not parquet")
    with pytest.raises(ToolError, match="not a readable parquet file"):
        benchmark_samples("videomme", str(data), "letter")
    data = shutil.copytree(fixtures["lvbench"], tmp_path / "lvbench")
    os.remove(data / "videos" / "micro0001.mp4")
    with pytest.raises(ToolError, match=r"1 of 3 videos are missing \(first: .*micro0001.mp4\)"):
        benchmark_samples("lvbench", str(data), "letter")
    # --limit: only the chosen samples' videos must be there
    assert len(benchmark_samples("lvbench", str(data), "letter", limit=1)) == 1


def test_lvbench_options_are_split_from_the_question():
    stem, options = datasets._split_options("What is it?\nSecond line\n(A) red\n(B) two words")
    assert stem == "What is it?\nSecond line" and options == ["red", "two words"]
    assert datasets._split_options("no options") == ("no options", [])


@NEEDS_FILES
def test_read_video_segment(tmp_path):
    import numpy as np

    from specvlm.micro.clip_file import write_video
    from specvlm.tools.common import InputError
    from specvlm.tools.video_input import read_video

    frames = np.zeros((16, 32, 32, 3), np.uint8)
    for i in range(16):
        frames[i] = i * 16  # each frame's grey level says which it is
    path = str(tmp_path / "ramp.mp4")
    write_video(path, frames, fps=8)  # 2 s
    levels = read_video(path, 3, (1.0, 2.0)).mean(axis=(1, 2, 3)) / 16
    assert np.allclose(levels, [8, 11.5, 15], atol=0.6)  # frames 8..15 of the second second
    with pytest.raises(InputError, match="starts after"):
        read_video(path, 3, (5.0, 6.0))
    with pytest.raises(InputError, match="bad segment"):
        read_video(path, 3, (1.0, 0.5))


# --- results: resuming, summary, table --------------------------------------------------------


def _record(i, identical=True, tau=3.0, decode=(1.0, 0.5)):
    return {
        "id": f"s{i}", "identical": identical, "tau": tau, "target_score": 1.0,
        "specvlm_score": 1.0, "video_tokens": 100, "kept_video_tokens": 10,
        "target_new_tokens": 11, "specvlm_new_tokens": 11,
        "target_decode_s": decode[0], "specvlm_decode_s": decode[1],
        "target_e2e_s": 2.0, "specvlm_e2e_s": 1.6, "decode_speedup": 2.0, "e2e_speedup": 1.25,
    }  # fmt: skip


SETTINGS = {"benchmark": "micro", "target": "t", "draft": "d", "frames": 8}


def test_open_run_resumes_only_the_same_run(tmp_path):
    out = str(tmp_path / "run")
    assert results.open_run(out, SETTINGS) == {}
    results.append_sample(out, _record(0))
    results.append_sample(out, _record(1))
    assert set(results.open_run(out, SETTINGS)) == {"s0", "s1"}
    with pytest.raises(ToolError, match=r"other settings \(frames 8 -> 16\)"):
        results.open_run(out, dict(SETTINGS, frames=16))
    assert results.open_run(out, dict(SETTINGS, frames=16), restart=True) == {}


def test_a_torn_last_line_is_dropped_and_a_broken_one_refused(tmp_path):
    out = tmp_path / "run"
    results.open_run(str(out), SETTINGS)
    results.append_sample(str(out), _record(0))
    with open(out / results.SAMPLES_FILE, "a") as f:
        f.write('{"id": "s1", "tau"')  # interrupted mid-write
    assert set(results.open_run(str(out), SETTINGS)) == {"s0"}
    assert (out / results.SAMPLES_FILE).read_text().count("\n") == 1
    (out / results.SAMPLES_FILE).write_text('garbage\n{"id": "s0"}\n')
    with pytest.raises(ToolError, match="line 1 is broken"):
        results.open_run(str(out), SETTINGS)


def test_a_file_cut_before_its_last_newline_still_resumes(tmp_path):
    out = tmp_path / "run"
    results.open_run(str(out), SETTINGS)
    (out / results.SAMPLES_FILE).write_text(json.dumps(_record(0)))  # no final newline
    assert set(results.open_run(str(out), SETTINGS)) == {"s0"}
    results.append_sample(str(out), _record(1))
    assert set(results.open_run(str(out), SETTINGS)) == {"s0", "s1"}


def test_failed_samples_are_counted_left_out_and_run_again(tmp_path):
    failed = {"id": "s1", "index": 1, "error": "cannot decode video x.mp4", "identical": None}
    summary = results.summarize([_record(0), failed], SETTINGS)
    assert summary["samples"] == 1 and summary["failed"] == 1 and summary["identical"] == 1
    assert summary["first_failure"] == "s1: cannot decode video x.mp4"
    out = str(tmp_path / "run")
    results.open_run(out, SETTINGS)
    results.append_sample(out, _record(0))
    results.append_sample(out, failed)
    assert set(results.open_run(out, SETTINGS)) == {"s0"}  # s1 runs again


def test_sampled_records_are_not_counted_as_different():
    sampled = [dict(_record(i), identical=None) for i in range(3)]
    summary = results.summarize(sampled, SETTINGS)  # settings that do not say "sampling"
    assert summary["identical"] is None and summary["all_identical"] is None


def test_summary_aggregates_time_per_token():
    records = [_record(0, decode=(1.0, 0.5)), _record(1, identical=False, tau=5.0, decode=(3, 1))]
    summary = results.summarize(records, SETTINGS, {"tau": 4.15})
    assert summary["samples"] == 2 and summary["identical"] == 1
    assert summary["all_identical"] is False
    assert summary["tau"] == 4.0
    assert summary["decode_speedup"] == pytest.approx(4.0 / 1.5)
    assert summary["e2e_speedup"] == pytest.approx(2.0 / 1.6)
    assert summary["published"] == {"tau": 4.15}
    assert describe(summary) == "identical 1/2, tau 4.00, decode 2.67x, end to end 1.25x"


def test_the_table_has_the_run_and_the_published_row():
    settings = dict(SETTINGS, max_new_tokens=32, decoding="greedy", specvlm="x", hardware="cpu")
    pub = {"setting": "72B", "tau": 4.15}
    text = results.table(results.summarize([_record(0)], settings, pub))
    assert "| this run | 1 | 100 (10) | 1/1 | 3.00 | 2.00x | 1.25x | 100.0% / 100.0% |" in text
    assert "| published (72B) | - | - | - | 4.15 | - | - | - |" in text
    text = results.table(results.summarize([_record(0)], settings, {"e2e_speedup": 2.24}))
    assert "| - | - | 2.24x | - |" in text


# --- the command ------------------------------------------------------------------------------


def _eval(argv, capsys=None):
    """In process: for the checks, which load no model."""
    code = cli.main(["eval", *argv])
    out = capsys.readouterr() if capsys else None
    return code, out


def _eval_process(argv, capsys=None):
    """``specvlm eval`` in a process of its own, without TRITON_INTERPRET (the kernels' PyTorch
    references on the CPU, as the command runs there; the interpreter is for kernel tests)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "specvlm.tools.cli", "eval", *argv, "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    return proc.returncode, proc


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--benchmark", "mvbench"], "--benchmark mvbench needs --data DIR"),
        (["--benchmark", "micro", "--data", "."], "reads no files: leave out --data"),
        (["--benchmark", "micro", "--drop-rate", "1.5"], "--drop-rate must be in [0, 1)"),
        (["--benchmark", "micro", "--drop-rate", "x"], "--drop-rate must be a number"),
        (["--benchmark", "micro", "--drop-rate", "auto", "--tree-size", "8"], "give a --drop-rate"),
        (["--benchmark", "micro", "--limit", "0"], "--limit must be >= 1"),
        (["--benchmark", "micro", "--target", "/nonexistent"], "give both --target and --draft"),
        (["--benchmark", "lvbench", "--data", "/nonexistent"], "is not a directory"),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, capsys, tmp_path):
    code, out = _eval([*argv, "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert message in out.err and out.err.count("\n") == 1


def test_device_auto_needs_accelerate_and_gpus(capsys, tmp_path):
    """``--device auto`` (device_map="auto", for a target larger than one GPU) is refused in one
    line where it cannot work."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: --device auto would load the models")
    code, out = _eval(["--benchmark", "micro", "--device", "auto", "--out", str(tmp_path)], capsys)
    assert code == 2 and out.err.count("\n") == 1
    if importlib.util.find_spec("accelerate") is None:
        assert "--device auto needs accelerate" in out.err
    else:
        assert "CUDA is not available" in out.err


def test_a_missing_dataset_is_refused_before_torch_loads(tmp_path):
    """The dataset check needs no torch: a missing file is refused before any heavy import."""
    code = (
        "import sys\n"
        "from specvlm.tools import cli\n"
        f"rc = cli.main(['eval', '--benchmark', 'mvbench', '--data', {str(tmp_path)!r}])\n"
        "assert rc == 2, rc\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "mvbench: " in proc.stderr and "json/action_sequence.json not found" in proc.stderr


def _lines(out):
    with open(os.path.join(out, results.SAMPLES_FILE)) as f:
        return [json.loads(line) for line in f]


def test_micro_end_to_end_then_resumed_and_extended(tmp_path, capsys):
    out = str(tmp_path / "micro")
    argv = ["--benchmark", "micro", "--frames", "8", "--max-new-tokens", "12", "--out", out]
    code, printed = _eval_process([*argv, "--limit", "2"], capsys)
    assert code == 0, printed.stderr
    first = _lines(out)
    assert [r["id"] for r in first] == ["micro/0", "micro/1"]
    assert all(r["identical"] is True and r["tau"] >= 1 for r in first)
    assert all(r["target_answer"] == r["specvlm_answer"] for r in first)
    assert "| this run | 2 |" in printed.stdout
    for name in ("summary.json", "table.md", "plot.png", "run.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    # interrupted during the third sample, then run again with --limit 3: only it is run
    code, printed = _eval_process([*argv, "--limit", "3"], capsys)
    assert code == 0, printed.stderr
    again = _lines(out)
    assert again[:2] == first and [r["id"] for r in again] == ["micro/0", "micro/1", "micro/2"]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["samples"] == 3 and summary["identical"] == 3 and summary["all_identical"]
    # other settings in the same directory: refused, nothing run
    code, printed = _eval_process([*argv, "--limit", "3", "--frames", "4"], capsys)
    assert code == 2 and "other settings (frames 8 -> 4)" in printed.stderr
    code, printed = _eval_process([*argv, "--selector", "uniform"], capsys)
    assert code == 2 and "selector 'two_stage' -> 'uniform'" in printed.stderr


DIFFERENT_LAST_TOKEN = """
import sys
import torch
from specvlm.eval import runner
from specvlm.tools import cli

plain = runner._Paths.specvlm


def one_token_off(self, inputs, gen, seed):
    generate = plain(self, inputs, gen, seed)

    def wrong(streamer):
        out = generate(streamer).clone()
        out[0, -1] = (out[0, -1] + 1) % 50  # SpecVLM's last token changed
        return out

    return wrong


runner._Paths.specvlm = one_token_off
sys.exit(cli.main(["eval", "--benchmark", "micro", "--limit", "2", "--frames", "8",
                   "--max-new-tokens", "6", "--no-plot", "--no-progress", "--out", sys.argv[1]]))
"""


def test_an_answer_that_differs_is_caught(tmp_path):
    """A SpecVLM answer one token off the target's is recorded as not identical, and the run
    exits with code 1: the identity check can fail."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = str(tmp_path / "off")
    proc = subprocess.run(
        [sys.executable, "-c", DIFFERENT_LAST_TOKEN, out], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1, proc.stderr
    assert [r["identical"] for r in _lines(out)] == [False, False]
    assert "| 0/2 |" in proc.stdout


@NEEDS_FILES
def test_an_unreadable_video_fails_its_sample_not_the_run(fixtures, tmp_path):
    import shutil

    data = shutil.copytree(fixtures["longvideobench"], tmp_path / "lvb")
    (data / "videos" / "micro0000.mp4").write_bytes(b"not a video")
    out = str(tmp_path / "out")
    argv = ["--benchmark", "longvideobench", "--data", str(data), "--frames", "4"]
    argv += ["--max-new-tokens", "4", "--no-plot", "--out", out]
    code, proc = _eval_process(argv)
    assert code == 1 and "1 samples failed (first: micro0000_0: cannot decode" in proc.stderr
    records = _lines(out)
    assert "error" in records[0] and records[1]["identical"] is True and len(records) == 3
    shutil.copy(data / "videos" / "micro0001.mp4", data / "videos" / "micro0000.mp4")
    code, proc = _eval_process(argv)  # run again: only the failed sample
    assert code == 0, proc.stderr
    records = _lines(out)
    assert len(records) == 4 and records[-1]["id"] == "micro0000_0" and records[-1]["identical"]


def test_sampled_runs_are_not_compared(tmp_path, capsys):
    out = str(tmp_path / "sampled")
    argv = ["--benchmark", "micro", "--frames", "8", "--max-new-tokens", "8", "--limit", "2"]
    code, printed = _eval_process(
        [*argv, "--temperature", "0.8", "--no-plot", "--out", out], capsys
    )
    assert code == 0, printed.stderr
    assert all(r["identical"] is None for r in _lines(out))
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["identical"] is None


@NEEDS_FILES
@pytest.mark.parametrize("name", FIXTURE_BENCHMARKS)
def test_every_benchmark_end_to_end_on_its_fixture(fixtures, name, tmp_path, capsys):
    out = str(tmp_path / name)
    argv = ["--benchmark", name, "--data", fixtures[name], "--frames", "4", "--limit", "2"]
    code, printed = _eval_process(
        [*argv, "--max-new-tokens", "6", "--no-plot", "--out", out], capsys
    )
    assert code == 0, printed.stderr
    records = _lines(out)
    assert len(records) == 2 and all(r["identical"] is True for r in records)
    if name != "videodetailcaption":
        assert all(r["target_score"] == r["specvlm_score"] is not None for r in records)


def test_a_differing_answer_fails_the_run(monkeypatch, capsys, tmp_path):
    """The exit code says when an answer was not the target's (the check cannot pass
    silently)."""
    from specvlm.eval import command

    settings = dict(SETTINGS, max_new_tokens=8, decoding="greedy", specvlm="x", hardware="cpu")
    summary = results.summarize([_record(0, identical=False)], settings)
    monkeypatch.setattr(command, "run", lambda args, samples, sampling: summary)
    code, _ = _eval(["--benchmark", "micro", "--out", str(tmp_path / "o")], capsys)
    assert code == 1


# --- lmms-eval's requests (the model itself: tests/test_lmms_eval.py) -------------------------


def test_generation_options_from_lmms_eval():
    assert sampling_of({"until": ["\n\n"], "max_new_tokens": 16, "temperature": 0}) is None
    assert sampling_of({"do_sample": False, "temperature": 0.7}) is None
    assert sampling_of({"do_sample": "true", "temperature": 0.7, "top_p": 0.9}) == {
        "do_sample": True, "temperature": 0.7, "top_p": 0.9,
    }  # fmt: skip
    with pytest.raises(ValueError, match="not supported: image_aspect_ratio"):
        sampling_of({"image_aspect_ratio": "pad"})
    with pytest.raises(ValueError, match="beam search"):
        sampling_of({"num_beams": 4})


def test_stops_and_videos_of_requests():
    assert cut_at_stops("a b\n\nc", ["\n\n"]) == "a b"
    assert cut_at_stops("a b. c", ".") == "a b"
    assert cut_at_stops("abc", None) == "abc"
    assert video_of(["/v.mp4"], "t") == "/v.mp4"
    with pytest.raises(ValueError, match="must give one video file, got str, str"):
        video_of(["/a.mp4", "/b.mp4"], "t")
    with pytest.raises(ValueError, match="got object"):
        video_of([object()], "t")
