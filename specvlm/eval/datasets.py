"""Reading each benchmark's files as the dataset ships them, offline (no torch).

``--data DIR`` is the dataset's folder after download and unzip (``docs/eval.md`` has the
commands). Every reader checks what it reads and raises
:class:`~specvlm.tools.common.ToolError` in one line for a missing file, a malformed row (which
file, which row, which key) or an unknown option, before any model loads;
:func:`check_videos` then checks that every chosen sample's video is there.
"""

from __future__ import annotations

import glob
import json
import os
import re

from specvlm.eval.samples import Sample, choice_prompt, letters_for
from specvlm.tools.common import ToolError

VIDEODETAILCAPTION_FILES = ("data/test-*.parquet", "Test_Videos/<video_name>.mp4")
MVBENCH_FILES = (
    "json/action_sequence.json",
    "json/action_prediction.json",
    "video/star/Charades_v1_480/<video>",
)
LONGVIDEOBENCH_FILES = ("lvb_val.json", "videos/<video_path>")
MLVU_FILES = ("MLVU/json/<N>_<task>.json (1-7)", "MLVU/video/<N>_<task>/<video>")
VIDEOMME_FILES = ("videomme/test-*.parquet", "data/<videoID>.mp4")
LVBENCH_FILES = ("video_info.meta.jsonl", "videos/<key>.mp4")

MVBENCH_SUBSETS = ("action_sequence", "action_prediction")
MLVU_TASKS = (
    "1_plotQA",
    "2_needle",
    "3_ego",
    "4_count",
    "5_order",
    "6_anomaly_reco",
    "7_topic_reasoning",
)


class _Rows:
    """The rows of one annotation file, with one-line errors naming the file and the row."""

    def __init__(self, path: str, rows: list, benchmark: str):
        self.path, self.rows, self.benchmark = path, rows, benchmark
        if not isinstance(rows, list) or not rows:
            raise ToolError(f"{benchmark}: {path} holds no rows (a list of records expected)")

    def field(self, index: int, key: str, kind: type | tuple):
        row = self.rows[index]
        if not isinstance(row, dict) or key not in row:
            raise ToolError(f"{self.benchmark}: {self.path} row {index} has no {key!r}")
        value = row[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ToolError(
                f"{self.benchmark}: {self.path} row {index}: {key!r} is a "
                f"{type(value).__name__}, expected {_kind_name(kind)}"
            )
        return value

    def options(self, index: int, key: str) -> list[str]:
        options = self.field(index, key, list)
        if not 1 <= len(options) <= 26 or not all(isinstance(o, str) for o in options):
            raise ToolError(
                f"{self.benchmark}: {self.path} row {index}: {key!r} must be 1 to 26 strings"
            )
        return options

    def choice_by_text(self, index: int, style: str) -> tuple[str, str, str]:
        """``(prompt, letters, right letter)`` of a row whose ``answer`` is the text of one of
        its ``candidates`` (MVBench, MLVU)."""
        candidates = self.options(index, "candidates")
        answer = self.field(index, "answer", str)
        if answer not in candidates:
            raise self.error(index, f"the answer {answer!r} is not one of its candidates")
        prompt, letters = choice_prompt(self.field(index, "question", str), candidates, style)
        return prompt, letters, letters[candidates.index(answer)]

    def error(self, index: int, what: str) -> ToolError:
        return ToolError(f"{self.benchmark}: {self.path} row {index}: {what}")


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _one(data: str, pattern: str, benchmark: str) -> str:
    found = sorted(glob.glob(os.path.join(data, pattern)))
    if not found:
        raise ToolError(f"{benchmark}: no {pattern} under {data} (see docs/eval.md)")
    return found[0]


def _json(path: str, benchmark: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ToolError(f"{benchmark}: {path} not found (see docs/eval.md)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ToolError(f"{benchmark}: {path} is not valid JSON: {err}") from err


def _jsonl(path: str, benchmark: str) -> list:
    if not os.path.isfile(path):
        raise ToolError(f"{benchmark}: {path} not found (see docs/eval.md)")
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ToolError(f"{benchmark}: {path} line {number}: {err}") from err
    return rows


def _parquet(path: str, benchmark: str) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ToolError(f'{benchmark} ships parquet: pip install "specvlm[eval]"') from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for a broken file
        raise ToolError(f"{benchmark}: {path} is not a readable parquet file: {err}") from err


def _video(data: str, folders: tuple[str, ...], name: str) -> str:
    """The first of ``data/folder/name`` that exists (the first one if none does: the missing
    file is reported by :func:`check_videos`)."""
    paths = [os.path.join(data, folder, name) for folder in folders]
    return next((p for p in paths if os.path.isfile(p)), paths[0])


def read_micro(data: str | None, style: str, frames: int, count: int | None) -> list[Sample]:
    """``count`` (default 24) caption questions about the embedded pair's held-out clips of
    ``frames`` frames (a clip's facts depend on its length), each with its exact caption: the
    embedded pair's VideoDetailCaption, with answers long enough to speculate on."""
    from specvlm.micro.data import held_out_example

    samples = []
    for n in range(count or 24):
        _, _, _, question, caption = held_out_example("caption", n, frames)
        samples.append(Sample(f"micro/{n}", question, n, caption))
    return samples


def read_videodetailcaption(data: str, style: str, frames: int, count: int | None) -> list[Sample]:
    """``data/test-*.parquet`` (``video_name``, ``question``, ``answer``) and
    ``Test_Videos/<video_name>.mp4`` (``videos.zip`` unzipped)."""
    bench = "videodetailcaption"
    path = _one(data, "data/test-*.parquet", bench)
    rows = _Rows(path, _parquet(path, bench), bench)
    samples = []
    for i in range(len(rows.rows)):
        name = rows.field(i, "video_name", str)
        video = next(
            (
                p
                for ext in (".mp4", ".MP4", ".mkv")
                if os.path.isfile(p := os.path.join(data, "Test_Videos", name + ext))
            ),
            os.path.join(data, "Test_Videos", name + ".mp4"),
        )
        question, answer = rows.field(i, "question", str), rows.field(i, "answer", str)
        samples.append(Sample(f"{bench}/{i}/{name}", question, video, answer))
    return samples


def read_mvbench(data: str, style: str, frames: int, count: int | None) -> list[Sample]:
    """``json/action_sequence.json`` and ``json/action_prediction.json`` (``video``,
    ``question``, ``candidates``, ``answer`` (the right candidate's text), ``start``/``end``
    seconds) and the STAR clips under ``video/star/Charades_v1_480/`` (``video/star.zip``
    unzipped; the ``data0613`` replacements are used where present)."""
    bench, samples = "mvbench", []
    folders = ("video/data0613/star/Charades_v1_480", "video/star/Charades_v1_480")
    for subset in MVBENCH_SUBSETS:
        path = os.path.join(data, "json", f"{subset}.json")
        rows = _Rows(path, _json(path, bench), bench)
        for i in range(len(rows.rows)):
            prompt, letters, letter = rows.choice_by_text(i, style)
            segment = (
                float(rows.field(i, "start", (int, float))),
                float(rows.field(i, "end", (int, float))),
            )
            if not 0 <= segment[0] <= segment[1]:
                raise rows.error(i, f"bad start/end {segment}")
            video = _video(data, folders, rows.field(i, "video", str))
            samples.append(Sample(f"{subset}/{i}", prompt, video, letter, letters, segment))
    return samples


def read_longvideobench(data: str, style: str, frames: int, count: int | None) -> list[Sample]:
    """``lvb_val.json`` (``id``, ``question``, ``candidates``, ``correct_choice``,
    ``video_path``) and ``videos/<video_path>`` (the ``videos.tar.part.*`` parts joined and
    untarred)."""
    bench = "longvideobench"
    path = os.path.join(data, "lvb_val.json")
    rows = _Rows(path, _json(path, bench), bench)
    samples = []
    for i in range(len(rows.rows)):
        candidates = rows.options(i, "candidates")
        correct = rows.field(i, "correct_choice", int)
        if not 0 <= correct < len(candidates):
            raise rows.error(i, f"correct_choice {correct} is not one of its candidates")
        prompt, letters = choice_prompt(rows.field(i, "question", str), candidates, style)
        video = os.path.join(data, "videos", rows.field(i, "video_path", str))
        sample_id = str(rows.field(i, "id", (str, int)))
        samples.append(Sample(sample_id, prompt, video, letters[correct], letters))
    return samples


def read_mlvu(data: str, style: str, frames: int, count: int | None) -> list[Sample]:
    """The seven multiple-choice tasks of MLVU/MVLU: ``MLVU/json/<N>_<task>.json`` (``video``,
    ``question``, ``candidates``, ``answer`` (the right candidate's text)) and
    ``MLVU/video/<N>_<task>/<video>``."""
    bench, samples = "mlvu", []
    root = data if os.path.isdir(os.path.join(data, "json")) else os.path.join(data, "MLVU")
    for task in MLVU_TASKS:
        path = os.path.join(root, "json", f"{task}.json")
        rows = _Rows(path, _json(path, bench), bench)
        for i in range(len(rows.rows)):
            prompt, letters, letter = rows.choice_by_text(i, style)
            video = os.path.join(root, "video", task, rows.field(i, "video", str))
            samples.append(Sample(f"{task}/{i}", prompt, video, letter, letters))
    return samples


def read_videomme(data: str, style: str, frames: int, count: int | None) -> list[Sample]:
    """``videomme/test-*.parquet`` (``question_id``, ``videoID``, ``question``, ``options``
    labelled ``"A. ..."``, ``answer`` a letter) and ``data/<videoID>.mp4`` (the
    ``videos_chunked_*.zip`` unzipped)."""
    bench = "videomme"
    path = _one(data, "videomme/test-*.parquet", bench)
    rows = _Rows(path, _parquet(path, bench), bench)
    samples = []
    for i in range(len(rows.rows)):
        options = rows.options(i, "options")
        prompt, letters = choice_prompt(rows.field(i, "question", str), options, style)
        answer = rows.field(i, "answer", str).strip().upper()
        if answer not in letters:
            raise rows.error(i, f"the answer {answer!r} is not one of {', '.join(letters)}")
        video = os.path.join(data, "data", rows.field(i, "videoID", str) + ".mp4")
        samples.append(Sample(rows.field(i, "question_id", str), prompt, video, answer, letters))
    return samples


_LVBENCH_OPTION = re.compile(r"^\(([A-Z])\)\s*(.*)$")


def read_lvbench(data: str, style: str, frames: int, count: int | None) -> list[Sample]:
    """``video_info.meta.jsonl`` (per video: ``key`` and ``qa``, a list of ``uid``,
    ``question`` (the stem, then one ``(A) ...`` line per option), ``answer`` a letter) and
    ``videos/<key>.mp4``."""
    bench = "lvbench"
    path = os.path.join(data, "video_info.meta.jsonl")
    videos = _Rows(path, _jsonl(path, bench), bench)
    samples = []
    for v in range(len(videos.rows)):
        key = videos.field(v, "key", str)
        qa = _Rows(f"{path} (video {key})", videos.field(v, "qa", list), bench)
        for q in range(len(qa.rows)):
            stem, options = _split_options(qa.field(q, "question", str))
            if not options:
                raise qa.error(q, "the question lists no (A) ... options")
            prompt, letters = choice_prompt(stem, options, style)
            answer = qa.field(q, "answer", str).strip().upper()
            if answer not in letters:
                raise qa.error(q, f"the answer {answer!r} is not one of {', '.join(letters)}")
            video = os.path.join(data, "videos", key + ".mp4")
            sample_id = str(qa.field(q, "uid", (str, int)))
            samples.append(Sample(sample_id, prompt, video, answer, letters))
    return samples


def _split_options(question: str) -> tuple[str, list[str]]:
    """LVBench's question text: the stem, and the text of its ``(A) ...`` lines in order."""
    stem, options = [], []
    for line in question.splitlines():
        match = _LVBENCH_OPTION.match(line.strip())
        if match and match.group(1) == letters_for(len(options) + 1)[-1]:
            options.append(match.group(2))
        elif not options:
            stem.append(line)
    return "\n".join(stem).strip(), options


def check_videos(samples: list[Sample], benchmark: str) -> None:
    """:class:`ToolError` naming how many chosen samples' videos are missing, and the first."""
    missing = [s.video for s in samples if isinstance(s.video, str) and not os.path.isfile(s.video)]
    if missing:
        raise ToolError(
            f"{benchmark}: {len(missing)} of {len(samples)} videos are missing (first: "
            f"{missing[0]}); unzip the dataset's videos there (see docs/eval.md)"
        )
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise ToolError(f"{benchmark}: sample ids repeat in the dataset's files")
