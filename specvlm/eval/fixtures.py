"""Each supported benchmark's files, in the layout and format the dataset ships, made from the
embedded pair's held-out clips: for the tests, and to try ``specvlm eval`` on a benchmark
without downloading it.

``python -m specvlm.eval.fixtures DIR [--samples N]`` writes ``DIR/<benchmark>/`` for every
benchmark (then ``specvlm eval --benchmark mvbench --data DIR/mvbench``) and ``DIR/lmms_task/``,
a local lmms-eval task over the same clips (``--include_path DIR/lmms_task``). The questions
are the clips' own (multiple choice: the right answer among other clips' answers); the videos
are MPEG-4 files, 8 frames per second (PyAV).
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys

from specvlm.eval.datasets import MLVU_TASKS, MVBENCH_SUBSETS

FPS = 8
FIXTURE_BENCHMARKS = (
    "videodetailcaption",
    "mvbench",
    "longvideobench",
    "mlvu",
    "videomme",
    "lvbench",
)


def _examples(count: int, frames: int) -> list[tuple]:
    """``(video, question, answer, candidates)`` per clip: held-out colour, count and caption
    questions in turn, each with the answers of others as wrong options (up to four)."""
    from specvlm.micro.data import held_out_example

    kinds = ("colour", "count", "caption")
    made = [held_out_example(kinds[n % 3], n // 3, frames)[2:] for n in range(count)]
    examples = []
    for n, (video, question, answer) in enumerate(made):
        others = [a for k, (_, _, a) in enumerate(made) if k % 3 == n % 3 and a != answer]
        wrong = list(dict.fromkeys(others))[:3] or ["nothing"]
        candidates = sorted([answer, *wrong])
        examples.append((video, question, answer, candidates))
    return examples


def _write_video(path: str, frames) -> None:
    from specvlm.micro.clip_file import write_video

    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_video(path, frames, fps=FPS)


def _write_json(path: str, rows) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)


def _write_parquet(path: str, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_videodetailcaption(root: str, examples) -> None:
    rows = []
    for n, (video, question, answer, _) in enumerate(examples):
        name = f"v_micro{n:04d}"
        _write_video(os.path.join(root, "Test_Videos", f"{name}.mp4"), video)
        rows.append({"video_name": name, "question": question, "answer": answer})
    _write_parquet(os.path.join(root, "data", "test-00000-of-00001.parquet"), rows)


def write_mvbench(root: str, examples) -> None:
    for s, subset in enumerate(MVBENCH_SUBSETS):
        rows = []
        for n, (video, question, answer, candidates) in enumerate(examples):
            if n % len(MVBENCH_SUBSETS) != s:
                continue
            name = f"MICRO{n:04d}.mp4"
            _write_video(os.path.join(root, "video/star/Charades_v1_480", name), video)
            end = len(video) / FPS
            rows.append(
                {"video": name, "question": question, "candidates": candidates,
                 "answer": answer, "start": 0.0, "end": end}
            )  # fmt: skip
        _write_json(os.path.join(root, "json", f"{subset}.json"), rows)


def write_longvideobench(root: str, examples) -> None:
    rows = []
    for n, (video, question, answer, candidates) in enumerate(examples):
        _write_video(os.path.join(root, "videos", f"micro{n:04d}.mp4"), video)
        rows.append(
            {"id": f"micro{n:04d}_0", "video_id": f"micro{n:04d}", "question": question,
             "candidates": candidates, "correct_choice": candidates.index(answer),
             "video_path": f"micro{n:04d}.mp4", "duration": len(video) / FPS}
        )  # fmt: skip
    _write_json(os.path.join(root, "lvb_val.json"), rows)


def write_mlvu(root: str, examples) -> None:
    for t, task in enumerate(MLVU_TASKS):
        # clip n goes to task n % 7; with fewer clips than tasks, a task reuses one
        chosen = [n for n in range(len(examples)) if n % len(MLVU_TASKS) == t]
        rows = []
        for n in chosen or [t % len(examples)]:
            video, question, answer, candidates = examples[n]
            name = f"micro{n:04d}.mp4"
            _write_video(os.path.join(root, "MLVU", "video", task, name), video)
            rows.append(
                {"video": name, "duration": len(video) / FPS, "question": question,
                 "candidates": candidates, "answer": answer, "question_type": task[2:]}
            )  # fmt: skip
        _write_json(os.path.join(root, "MLVU", "json", f"{task}.json"), rows)


def write_videomme(root: str, examples) -> None:
    rows = []
    for n, (video, question, answer, candidates) in enumerate(examples):
        video_id = f"micro{n:04d}"
        _write_video(os.path.join(root, "data", f"{video_id}.mp4"), video)
        letters = string.ascii_uppercase[: len(candidates)]
        rows.append(
            {"video_id": f"{n:03d}", "duration": "short", "domain": "micro",
             "sub_category": "micro", "url": "", "videoID": video_id,
             "question_id": f"{n:03d}-1", "task_type": "micro", "question": question,
             "options": [f"{x}. {c}" for x, c in zip(letters, candidates, strict=True)],
             "answer": letters[candidates.index(answer)]}
        )  # fmt: skip
    _write_parquet(os.path.join(root, "videomme", "test-00000-of-00001.parquet"), rows)


def write_lvbench(root: str, examples) -> None:
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "video_info.meta.jsonl"), "w") as f:
        for n, (video, question, answer, candidates) in enumerate(examples):
            key = f"micro{n:04d}"
            _write_video(os.path.join(root, "videos", f"{key}.mp4"), video)
            letters = string.ascii_uppercase[: len(candidates)]
            lines = [question] + [f"({x}) {c}" for x, c in zip(letters, candidates, strict=True)]
            qa = {"uid": f"{n}", "question": "\n".join(lines),
                  "answer": letters[candidates.index(answer)], "question_type": ["micro"],
                  "time_reference": ""}  # fmt: skip
            f.write(json.dumps({"key": key, "type": "micro", "qa": [qa]}) + "\n")


WRITERS = {
    "videodetailcaption": write_videodetailcaption,
    "mvbench": write_mvbench,
    "longvideobench": write_longvideobench,
    "mlvu": write_mlvu,
    "videomme": write_videomme,
    "lvbench": write_lvbench,
}


def write_fixture(root: str, benchmark: str, samples: int = 3, frames: int = 8) -> str:
    """``benchmark``'s files made from ``samples`` held-out clips, under ``root``; returns it."""
    WRITERS[benchmark](root, _examples(samples, frames))
    return root


LMMS_TASK = "specvlm_micro"
_LMMS_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 32
  do_sample: false
  until: ["<|im_end|>"]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
_LMMS_UTILS = '''\
"""The embedded clips as an lmms-eval task (made by specvlm.eval.fixtures)."""


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]
'''


def write_lmms_task(root: str, samples: int = 4, frames: int = 8) -> str:
    """A local lmms-eval task (``--include_path root``) named ``specvlm_micro``: caption
    questions about held-out clips, scored by exact match with the clip's caption."""
    from specvlm.micro.data import held_out_example

    os.makedirs(root, exist_ok=True)
    data = os.path.join(os.path.abspath(root), "samples.jsonl")
    with open(data, "w") as f:
        for n in range(samples):
            _, _, video, question, caption = held_out_example("caption", n, frames)
            path = os.path.join(os.path.abspath(root), "videos", f"micro{n:04d}.mp4")
            _write_video(path, video)
            f.write(json.dumps({"video": path, "question": question, "answer": caption}) + "\n")
    with open(os.path.join(root, f"{LMMS_TASK}.yaml"), "w") as f:
        f.write(_LMMS_YAML.format(task=LMMS_TASK, data=json.dumps(data)))
    with open(os.path.join(root, "utils.py"), "w") as f:
        f.write(_LMMS_UTILS)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specvlm.eval.fixtures", description=__doc__)
    parser.add_argument("out", help="directory to write (one folder per benchmark)")
    parser.add_argument("--samples", type=int, default=3, help="clips per benchmark (3)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (8)")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.frames < 1:
        parser.error("--samples and --frames must be >= 1")
    for name in FIXTURE_BENCHMARKS:
        write_fixture(os.path.join(args.out, name), name, args.samples, args.frames)
    write_lmms_task(os.path.join(args.out, "lmms_task"), args.samples, args.frames)
    print(f"wrote {', '.join(FIXTURE_BENCHMARKS)} and lmms_task under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
