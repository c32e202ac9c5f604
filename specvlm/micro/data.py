"""Training / evaluation batches for the micro pair, built token by token.

Token layout of one question about a clip (the evaluation prompt + answer):

    <|im_start|> user <video>*129 q <|im_end|> <|im_start|> assistant a <|im_end|>

exactly the tokens the micro processor makes from the chat template (checked in
tests/test_micro_training.py).  Labels are the answer tokens and their ``<|im_end|>``.

A training item packs ``k`` questions about one clip into one row without letting them see
each other: the shared prefix ``<|im_start|> user <video>*129`` is followed by k segments
``q_j <|im_end|> <|im_start|> assistant a_j <|im_end|>``; a 4-D boolean attention mask lets
each segment attend to the prefix and to itself only, and each segment's position ids restart
right after the prefix.  So every segment is computed exactly as the single-question prompt
(checked against separate forwards in the tests) while the video is encoded once.  (A plain
multi-turn chat, :func:`conversation`, would leak answers: "what colour is the square ?" tells
a later "is there a red square ?" or "which shape is red ?" what it should read off the video.)

Pixel values are what the processor returns: float32 [B, T, 3, H, W] = uint8 * (1 / 255).
"""

from __future__ import annotations

import numpy as np
import torch

from specvlm.micro.clips import QUESTION_TYPES, make_clip, make_question, num_video_tokens
from specvlm.micro.tokenizer import EOS_ID, IM_START_ID, PAD_ID, VIDEO_ID, vocabulary

IGNORE = -100
EVAL_SEED_BASE = 1_000_000_000  # held-out clips: seeds >= this; training seeds are below
_DEMO_SEED_BASE = EVAL_SEED_BASE + 900_000  # clips of `specvlm demo` / `specvlm bench`
_VOCAB = vocabulary()


def word_ids(text: str) -> list[int]:
    """Ids of clips-style text (words separated by single spaces)."""
    return [_VOCAB[w] for w in text.split()]


def conversation(turns: list[tuple[str, str]], frames: int = 8) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a multi-turn chat about one video; turns = [(question, answer)].

    One turn is the evaluation layout.  Not used for training (see the module docstring).
    """
    ids: list[int] = []
    labels: list[int] = []
    user, assistant = _VOCAB["user"], _VOCAB["assistant"]
    for i, (question, answer) in enumerate(turns):
        head = [IM_START_ID, user]
        if i == 0:
            head += [VIDEO_ID] * num_video_tokens(frames)
        head += word_ids(question) + [EOS_ID, IM_START_ID, assistant]
        tail = word_ids(answer) + [EOS_ID]
        ids += head + tail
        labels += [IGNORE] * len(head) + tail
    return ids, labels


def packed(turns: list[tuple[str, str]], frames: int = 8):
    """(input_ids, labels, position_ids, segments) of k independent questions about one video.

    segments: 0 for the shared prefix, j (1..k) for question j.
    """
    prefix = [IM_START_ID, _VOCAB["user"]] + [VIDEO_ID] * num_video_tokens(frames)
    ids, labels = list(prefix), [IGNORE] * len(prefix)
    positions, segments = list(range(len(prefix))), [0] * len(prefix)
    for j, (question, answer) in enumerate(turns, start=1):
        head = word_ids(question) + [EOS_ID, IM_START_ID, _VOCAB["assistant"]]
        tail = word_ids(answer) + [EOS_ID]
        ids += head + tail
        labels += [IGNORE] * len(head) + tail
        positions += range(len(prefix), len(prefix) + len(head) + len(tail))
        segments += [j] * (len(head) + len(tail))
    return ids, labels, positions, segments


def packed_mask(segments: torch.Tensor) -> torch.Tensor:
    """bool [B, 1, L, L] from segments [B, L] (-1 = padding): causal, prefix + own segment.

    Padding rows attend to themselves only (no empty rows), nothing attends to padding.
    """
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    q, k = segments[:, :, None], segments[:, None, :]
    allow = causal & ((k == 0) | (k == q)) & (k >= 0) & (q >= 0)
    allow |= torch.eye(length, dtype=torch.bool)
    return allow[:, None]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A boolean 4-D mask (True = may attend) as the additive mask eager attention expects.

    transformers passes a prepared 4-D mask to the attention function as it is: SDPA reads a
    boolean one as "allowed", but eager attention *adds* it to the scores, so a boolean mask
    there masks nothing (True adds 1).  Eager attention needs 0 where allowed and a large
    negative number elsewhere.
    """
    if allowed.dtype != torch.bool or allowed.dim() != 4:
        raise ValueError(f"expected a boolean 4-D mask, got {allowed.dtype} {tuple(allowed.shape)}")
    zero = torch.zeros((), dtype=dtype)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def pixels(video: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [T, 3, H, W] in [0, 1] (as the micro processor)."""
    # uint8 tensor * python float, bit for bit what the video processor's rescale does
    return torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2) * (1 / 255)


def noise_video(seed: int, frames: int = 8, size: int = 64) -> np.ndarray:
    """Uniform uint8 noise of a clip's shape (the video-blind control)."""
    return np.random.default_rng([int(seed), 99]).integers(
        0, 256, (frames, size, size, 3), dtype=np.uint8
    )


def collate(items: list[tuple]) -> dict[str, torch.Tensor]:
    """Right-pad items into a model batch.

    Items are (ids, labels, pixels) -> 2-D attention mask, or (ids, labels, positions,
    segments, pixels) from :func:`train_item` -> 4-D packed mask and position_ids.
    """
    n = max(len(item[0]) for item in items)
    input_ids = torch.full((len(items), n), PAD_ID, dtype=torch.long)
    labels = torch.full((len(items), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    positions = torch.zeros((len(items), n), dtype=torch.long)
    segments = torch.full((len(items), n), -1, dtype=torch.long)
    for b, item in enumerate(items):
        ids, lab = item[0], item[1]
        input_ids[b, : len(ids)] = torch.tensor(ids)
        labels[b, : len(lab)] = torch.tensor(lab)
        mask[b, : len(ids)] = 1
        if len(item) == 5:
            positions[b, : len(ids)] = torch.tensor(item[2])
            segments[b, : len(ids)] = torch.tensor(item[3])
    batch = dict(
        input_ids=input_ids,
        attention_mask=mask,
        labels=labels,
        pixel_values_videos=torch.stack([item[-1] for item in items]),
    )
    if len(items[0]) == 5:
        batch["attention_mask"] = packed_mask(segments)
        batch["position_ids"] = positions
    return batch


def train_item(
    seed: int,
    k: int,
    types: tuple[str, ...] = QUESTION_TYPES,
    frames: int = 8,
    size: int = 64,
    objects: int | None = None,
):
    """(ids, labels, positions, segments, pixels) of training clip `seed`: :func:`packed`
    with k questions of distinct random types.

    `objects` forces the number of objects (curriculum); None keeps the seed's.
    """
    video, facts = make_clip(seed, frames, size, objects=objects)
    rng = np.random.default_rng([int(seed), 11])
    chosen = rng.permutation(len(types))[: min(k, len(types))]
    turns = [make_question(facts, types[int(i)], rng) for i in chosen]
    ids, labels, positions, segments = packed(turns, frames)
    return ids, labels, positions, segments, pixels(video)


def eval_examples(n_per_type: int, types: tuple[str, ...] = QUESTION_TYPES, frames=8, size=64):
    """Held-out single-question examples: list of (qtype, seed, video, question, answer)."""
    return [held_out_example(qtype, i, frames, size) for qtype in types for i in range(n_per_type)]


def held_out_example(qtype: str, i: int, frames: int = 8, size: int = 64):
    """The ``i``-th held-out example of question type ``qtype``: (qtype, seed, video, question,
    answer)."""
    seed = EVAL_SEED_BASE + 100_000 * QUESTION_TYPES.index(qtype) + i
    video, facts = make_clip(seed, frames, size)
    rng = np.random.default_rng([int(seed), 13])
    question, answer = make_question(facts, qtype, rng)
    return qtype, seed, video, question, answer


def held_out_clip(n: int, frames: int = 8, size: int = 64) -> np.ndarray:
    """The ``n``-th clip of ``specvlm demo`` / ``specvlm bench``: a held-out clip (its seed is
    above every training seed, and apart from the training script's evaluation clips)."""
    if n < 0:
        raise ValueError(f"clip number must be >= 0, got {n}")
    return make_clip(_DEMO_SEED_BASE + n, frames, size)[0]
