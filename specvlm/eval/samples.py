"""One benchmark sample, the prompt the models see, and the scoring of an answer (no torch).

Multiple-choice prompts follow lmms-eval's layout (the question, one option per line as
``A. text``, then a post-prompt). Two post-prompts (``--answer-style``):

* ``letter``: lmms-eval's "Answer with the option's letter from the given choices directly.";
  the answer is a letter or two, too short for speculative decoding to show anything.
* ``explain`` (the default): the letter, then the reasons; the answer runs to the token limit,
  as the published acceptance lengths (tau 3.8 on MVBench) need.

Both are scored the same way: the first option letter the answer names.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

ANSWER_STYLES = {
    "letter": "Answer with the option's letter from the given choices directly.",
    "explain": "Answer with the option's letter from the given choices first, then explain why.",
}


@dataclass(frozen=True)
class Sample:
    """One question about one video.

    ``video``: a video file, or an embedded held-out clip's number (the ``micro`` benchmark).
    ``reference``: the ground truth: an option letter (``letters`` non-empty), a caption, or
    the embedded clip's answer. ``segment``: ``(start, end)`` seconds of the video the question
    is about (None: all of it)."""

    id: str
    prompt: str
    video: str | int
    reference: str | None = None
    letters: str = ""
    segment: tuple[float, float] | None = None

    @property
    def choice(self) -> bool:
        return bool(self.letters)


def letters_for(count: int) -> str:
    """``"ABCD"`` for four options."""
    if not 1 <= count <= 26:
        raise ValueError(f"a multiple-choice question has 1 to 26 options, got {count}")
    return string.ascii_uppercase[:count]


_LABELLED = re.compile(r"^\(?([A-Z])[.):]\s*")


def strip_label(option: str) -> str:
    """An option's text without a leading ``A.`` / ``(A)`` / ``A)`` / ``A:`` label."""
    return _LABELLED.sub("", option.strip(), count=1)


def choice_prompt(question: str, options: list[str], style: str) -> tuple[str, str]:
    """``(prompt, letters)`` of a multiple-choice question (``options`` labelled or not)."""
    if style not in ANSWER_STYLES:
        raise ValueError(f"answer style must be one of {', '.join(ANSWER_STYLES)}, got {style!r}")
    letters = letters_for(len(options))
    lines = [question.strip()]
    lines += [
        f"{letter}. {strip_label(text)}" for letter, text in zip(letters, options, strict=True)
    ]
    return "\n".join(lines + [ANSWER_STYLES[style]]), letters


def answer_letter(answer: str, letters: str) -> str | None:
    """The option an answer names: its first standalone capital among ``letters`` (``B``,
    ``(B)``, ``B.``, ``Answer: B``), None if it names none."""
    for match in re.finditer(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", answer):
        if match.group(1) in letters:
            return match.group(1)
    return None


def score(sample: Sample, answer: str) -> float | None:
    """1.0 / 0.0 for a right / wrong answer; None where the benchmark needs a judge model
    (captions: lmms-eval scores those with its own judge)."""
    if sample.reference is None:
        return None
    if sample.choice:
        return float(answer_letter(answer, sample.letters) == sample.reference)
    if isinstance(sample.video, int):  # an embedded clip: its answer is exact
        return float(answer.strip() == sample.reference)
    return None
