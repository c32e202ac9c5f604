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


def strip_label(option: str, letter: str) -> str:
    """An option's text without its own label (``A.`` / ``(A)`` / ``A)`` / ``A:`` for the
    option at letter ``A``): a text that merely starts like a label (``U.S. Army`` as option A)
    is kept."""
    option = option.strip()
    return re.sub(rf"^\(?{letter}[.):]\s*", "", option, count=1)


def choice_prompt(question: str, options: list[str], style: str) -> tuple[str, str]:
    """``(prompt, letters)`` of a multiple-choice question (``options`` labelled or not)."""
    if style not in ANSWER_STYLES:
        raise ValueError(f"answer style must be one of {', '.join(ANSWER_STYLES)}, got {style!r}")
    letters = letters_for(len(options))
    lines = [question.strip()]
    lines += [
        f"{letter}. {strip_label(text, letter)}"
        for letter, text in zip(letters, options, strict=True)
    ]
    return "\n".join(lines + [ANSWER_STYLES[style]]), letters


# the ways an answer names an option, most explicit first
_NAMED = (
    re.compile(r"^\s*\(?([A-Z])\)?\s*(?:[.:)]|$)"),  # "B", "B.", "(B)", "B: because ..."
    re.compile(r"(?i:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Z])(?![A-Za-z])"),  # "answer is C"
    re.compile(r"\(([A-Z])\)"),  # "... (C) ..."
    re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])(?!\s+[a-z])"),  # a letter, not "A man"
    re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])"),  # any standalone capital
)


def answer_letter(answer: str, letters: str) -> str | None:
    """The option an answer names, None if it names none: a leading ``B`` / ``(B)`` / ``B.``,
    else ``answer is B`` / ``Answer: B``, else ``(B)``, else the first standalone option letter
    that is not an article (``A man ...``), else the first standalone option letter."""
    for pattern in _NAMED:
        for match in pattern.finditer(answer):
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
