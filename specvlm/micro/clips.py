"""Procedural video clips with exactly known facts, and question / answer pairs about them.

A clip is ``frames`` RGB frames of ``size`` x ``size`` pixels on a plain dark background, holding
1-3 large flat-coloured shapes (side / diameter 16-22 px at ``size`` 64, i.e. >= 2 patches of
8 px), each of a different shape and a different colour.  Every object is either visible in the
whole clip, appears at a later frame, or disappears before the end (always visible for >= 3
frames), and either stays still or moves in a straight line (left, right, up or down, 2-3 px per
frame).  Visible objects never overlap, and never leave the frame.

Everything is decided by ``numpy.random.default_rng(seed)``: ``make_clip(seed)`` returns the same
pixels and facts on every machine.  Answers are functions of the facts alone
(:func:`answer_for`), and every fact can be read off the pixels.

Language: lower case words separated by single spaces, punctuation as separate words (``" ?"``,
``" ."``); frames are numbered from ``one`` in questions and answers; :data:`WORDS` is the whole
vocabulary (every question and answer uses only these words).
"""

from __future__ import annotations

import re

import numpy as np

FRAME_SIZE = 64  # the pair's frames (64x64), seen in patches of PATCH_SIZE
PATCH_SIZE = 8


def num_video_tokens(frames: int, frame_size: int = FRAME_SIZE, patch_size: int = PATCH_SIZE):
    """<video> tokens of one video after expansion: frames * ceil(P / 2)**2 + 1."""
    p = frame_size // patch_size
    return frames * ((p + 1) // 2) ** 2 + 1


COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 40),
    "green": (50, 190, 60),
    "blue": (45, 85, 235),
    "yellow": (235, 215, 45),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
BACKGROUND: tuple[int, int, int] = (28, 28, 32)
NUMBERS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
)
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "nowhere")
_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "nowhere": (0, 0)}

# Question types, simplest first (the order of a curriculum).
QUESTION_TYPES: tuple[str, ...] = (
    "count",
    "colour",
    "shape",
    "exists",
    "caption",
    "motion",
    "appear",
    "disappear",
)
STATIC_TYPES: tuple[str, ...] = ("count", "colour", "shape", "exists", "caption")
TEMPORAL_TYPES: tuple[str, ...] = ("motion", "appear", "disappear")

# Question templates per type ({shape}, {colour}, {object} are filled in).  The first template
# of each type is the canonical one (used by make_example(..., paraphrase=False)).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "caption": ("describe the video .", "what is in the video ?"),
    "count": ("how many shapes are there ?", "count the shapes ."),
    "colour": ("what colour is the {shape} ?", "which colour does the {shape} have ?"),
    "shape": ("what shape is {colour} ?", "which shape is {colour} ?"),
    "exists": ("is there a {object} ?", "do you see a {object} ?"),
    "motion": ("which way does the {shape} move ?", "where does the {shape} go ?"),
    "appear": (
        "in which frame does the {shape} appear ?",
        "when does the {shape} appear ?",
    ),
    "disappear": (
        "in which frame does the {shape} disappear ?",
        "when does the {shape} disappear ?",
    ),
}

_FIXED_WORDS = (
    ". ? a and yes no never nowhere describe the video what is in how many shapes are there "
    "count colour which does have shape do you see way move where go frame appear when "
    "disappear user assistant system"
).split()


def _vocabulary() -> tuple[str, ...]:
    words = list(_FIXED_WORDS) + list(COLOURS) + list(SHAPES) + list(NUMBERS) + list(MOTIONS)
    out: list[str] = []
    for w in words:
        if w not in out:
            out.append(w)
    return tuple(out)


WORDS: tuple[str, ...] = _vocabulary()


# ---------------------------------------------------------------- clip generation


def _mask(shape: str, side: int) -> np.ndarray:
    """Boolean [side, side] footprint of a shape (pixel centres inside the figure)."""
    c = (side - 1) / 2.0
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "circle":
        return (xx - c) ** 2 + (yy - c) ** 2 <= (side / 2.0) ** 2
    if shape == "triangle":  # apex up, base on the bottom row
        half_width = (yy + 1.0) / side * (side / 2.0)
        return np.abs(xx - c) <= half_width
    raise ValueError(f"unknown shape {shape!r}")


def _positions(obj: dict, frames: int) -> list[tuple[int, int]]:
    dx, dy = _STEP[obj["motion"]]
    step = obj["speed"]
    return [(obj["x"] + dx * step * t, obj["y"] + dy * step * t) for t in range(frames)]


def _visible(obj: dict, t: int) -> bool:
    end = obj["disappear"] if obj["disappear"] is not None else 10**9
    return obj["appear"] <= t < end


def _sample_objects(rng: np.random.Generator, frames: int, size: int, n: int, moving: bool):
    shapes = rng.permutation(len(SHAPES))[:n]
    colours = rng.permutation(len(COLOURS))[:n]
    min_side, max_side = max(4, size // 4), max(4, (size * 11) // 32)  # 16..22 at 64
    objs = []
    for i in range(n):
        side = int(rng.integers(min_side, max_side + 1))
        r = rng.random()
        if r < 0.4 or frames < 4:
            appear, disappear = 0, None
        elif r < 0.7:
            appear, disappear = int(rng.integers(1, frames - 2)), None  # visible >= 3 frames
        else:
            appear, disappear = 0, int(rng.integers(3, frames))
        motion = MOTIONS[int(rng.integers(0, 4))] if moving and rng.random() < 0.85 else "nowhere"
        speed = int(rng.integers(2, 4)) if motion != "nowhere" else 0
        travel = speed * (frames - 1)
        dx, dy = _STEP[motion]
        # Start so that the whole trajectory stays inside the frame.
        lo_x = travel if dx < 0 else 0
        hi_x = size - side - (travel if dx > 0 else 0)
        lo_y = travel if dy < 0 else 0
        hi_y = size - side - (travel if dy > 0 else 0)
        if hi_x < lo_x or hi_y < lo_y:
            return None
        objs.append(
            dict(
                shape=SHAPES[int(shapes[i])],
                colour=list(COLOURS)[int(colours[i])],
                side=side,
                x=int(rng.integers(lo_x, hi_x + 1)),
                y=int(rng.integers(lo_y, hi_y + 1)),
                motion=motion,
                speed=speed,
                appear=appear,
                disappear=disappear,
            )
        )
    return objs


def _overlap(a: dict, b: dict, frames: int, margin: int = 2) -> bool:
    pa, pb = _positions(a, frames), _positions(b, frames)
    for t in range(frames):
        if not (_visible(a, t) and _visible(b, t)):
            continue
        (ax, ay), (bx, by) = pa[t], pb[t]
        if (
            ax < bx + b["side"] + margin
            and bx < ax + a["side"] + margin
            and ay < by + b["side"] + margin
            and by < ay + a["side"] + margin
        ):
            return True
    return False


def make_facts(
    seed: int, frames: int = 8, size: int = 64, objects: int | None = None, moving=None
) -> dict:
    """The facts of clip `seed` (no pixels): see :func:`make_clip`."""
    if frames < 1 or size < 32:
        raise ValueError("need frames >= 1 and size >= 32")
    if objects is not None and not 1 <= objects <= 3:
        raise ValueError("objects must be 1, 2 or 3")
    rng = np.random.default_rng([int(seed), frames, size])
    n = int(rng.integers(1, 4))
    is_moving = bool(rng.random() < 0.8)
    # Overrides are applied after the draws, so the default clips do not change.
    n = n if objects is None else objects
    moving = is_moving if moving is None else bool(moving)
    objs = None
    for attempt in range(200):
        cand = _sample_objects(rng, frames, size, n, moving and attempt < 100)
        if cand is None:
            continue
        if not any(_overlap(a, b, frames) for i, a in enumerate(cand) for b in cand[i + 1 :]):
            objs = cand
            break
    if objs is None:  # pragma: no cover - never seen for size >= 32
        raise RuntimeError(f"could not place objects for seed {seed}")
    objs.sort(key=lambda o: SHAPES.index(o["shape"]))  # canonical order: square, circle, triangle
    for o in objs:
        o["positions"] = _positions(o, frames)
        o["visible"] = [_visible(o, t) for t in range(frames)]
    return dict(seed=int(seed), frames=frames, size=size, background=BACKGROUND, objects=objs)


def render(facts: dict) -> np.ndarray:
    """uint8 [T, H, W, 3] pixels of `facts`."""
    frames, size = facts["frames"], facts["size"]
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    video[:] = np.asarray(facts["background"], dtype=np.uint8)
    for o in facts["objects"]:
        mask = _mask(o["shape"], o["side"])
        colour = np.asarray(COLOURS[o["colour"]], dtype=np.uint8)
        for t in range(frames):
            if not o["visible"][t]:
                continue
            x, y = o["positions"][t]
            region = video[t, y : y + o["side"], x : x + o["side"]]
            region[mask] = colour
    return video


def make_clip(
    seed: int, frames: int = 8, size: int = 64, objects: int | None = None, moving=None
) -> tuple[np.ndarray, dict]:
    """(video uint8 numpy [frames, size, size, 3], facts) of clip `seed`, deterministic.

    `objects` (1-3) and `moving` (bool) override the seed's draws (for curricula); with the
    defaults (None) the clip is the seed's own.

    facts: ``seed``, ``frames``, ``size``, ``background`` (RGB), ``objects``: a list (canonical
    order square, circle, triangle) of dicts with ``shape``, ``colour``, ``side`` (px), ``x``,
    ``y`` (top-left at frame 0), ``motion`` (left / right / up / down / nowhere), ``speed``
    (px per frame), ``appear`` (first visible frame, 0-based), ``disappear`` (first frame it is
    gone again, 0-based, or None), ``positions`` (top-left per frame), ``visible`` (per frame).
    """
    facts = make_facts(seed, frames, size, objects, moving)
    return render(facts), facts


def token_coverage(facts: dict, grid: tuple[int, int]) -> np.ndarray:
    """float [objects, frames * rows * cols]: the share of each video token's pixels that each
    object covers, for tokens on a ``grid = (rows, cols)`` lattice per frame (frame-major, then
    row-major, as the model's grid tokens). Objects in the order of ``facts["objects"]``."""
    frames, size = facts["frames"], facts["size"]
    rows, cols = grid
    if size % rows or size % cols:
        raise ValueError(f"a {rows} x {cols} grid does not tile {size} x {size} frames")
    out = np.zeros((len(facts["objects"]), frames, rows, cols))
    for i, o in enumerate(facts["objects"]):
        footprint = _mask(o["shape"], o["side"])
        for t in range(frames):
            if not o["visible"][t]:
                continue
            pixels = np.zeros((size, size), dtype=bool)
            x, y = o["positions"][t]
            pixels[y : y + o["side"], x : x + o["side"]] = footprint
            out[i, t] = pixels.reshape(rows, size // rows, cols, size // cols).mean(axis=(1, 3))
    return out.reshape(len(facts["objects"]), -1)


# ---------------------------------------------------------------- questions and answers


def _number(n: int) -> str:
    return NUMBERS[n]


def _object_by(facts: dict, key: str, value: str) -> dict:
    for o in facts["objects"]:
        if o[key] == value:
            return o
    raise KeyError(f"no {key} {value!r} in clip {facts['seed']}")


def caption(facts: dict) -> str:
    """``"a red square and a blue circle ."`` (canonical object order)."""
    parts = [f"a {o['colour']} {o['shape']}" for o in facts["objects"]]
    return " and ".join(parts) + " ."


def answer_for(facts: dict, qtype: str, arg: str | None = None) -> str:
    """The answer to question `qtype` about `arg` (a shape, a colour, or "colour shape")."""
    if qtype == "caption":
        return caption(facts)
    if qtype == "count":
        return _number(len(facts["objects"]))
    if qtype == "colour":
        return _object_by(facts, "shape", arg)["colour"]
    if qtype == "shape":
        return _object_by(facts, "colour", arg)["shape"]
    if qtype == "exists":
        colour, shape = arg.split()
        hit = any(o["colour"] == colour and o["shape"] == shape for o in facts["objects"])
        return "yes" if hit else "no"
    if qtype == "motion":
        return _object_by(facts, "shape", arg)["motion"]
    if qtype == "appear":
        return _number(_object_by(facts, "shape", arg)["appear"] + 1)
    if qtype == "disappear":
        d = _object_by(facts, "shape", arg)["disappear"]
        return "never" if d is None else _number(d + 1)
    raise ValueError(f"unknown question type {qtype!r}")


def _has_event(obj: dict, qtype: str) -> bool:
    if qtype == "appear":
        return obj["appear"] > 0
    if qtype == "disappear":
        return obj["disappear"] is not None
    return obj["motion"] != "nowhere"


def make_question(
    facts: dict, qtype: str, rng: np.random.Generator, paraphrase: bool = True
) -> tuple[str, str]:
    """(question, answer) of type `qtype` about `facts`, arguments drawn from `rng`."""
    objs = facts["objects"]
    templates = TEMPLATES[qtype]
    template = templates[int(rng.integers(0, len(templates)))] if paraphrase else templates[0]
    obj = objs[int(rng.integers(0, len(objs)))]
    if qtype in ("appear", "disappear", "motion") and rng.random() < 0.8:
        # Mostly ask about an object with an event (when there is one), so that the answer
        # "one" / "never" / "nowhere" is not a strong prior.
        eventful = [o for o in objs if _has_event(o, qtype)]
        if eventful:
            obj = eventful[int(rng.integers(0, len(eventful)))]
    if qtype == "exists":
        if rng.random() < 0.5:
            arg = f"{obj['colour']} {obj['shape']}"
        else:  # a combination that is not in the clip (often a present colour or shape)
            present = {(o["colour"], o["shape"]) for o in objs}
            absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
            c, s = absent[int(rng.integers(0, len(absent)))]
            arg = f"{c} {s}"
        question = template.format(object=arg)
    elif qtype == "shape":
        arg = obj["colour"]
        question = template.format(colour=arg)
    elif qtype in ("caption", "count"):
        arg = None
        question = template
    else:
        arg = obj["shape"]
        question = template.format(shape=arg)
    return question, answer_for(facts, qtype, arg)


def make_example(
    seed: int,
    qtype: str | None = None,
    frames: int = 8,
    size: int = 64,
    types: tuple[str, ...] = QUESTION_TYPES,
    paraphrase: bool = True,
) -> tuple[np.ndarray, str, str]:
    """(video uint8 [T, H, W, 3], question, answer) for clip `seed`, deterministic.

    The question type is `qtype`, or drawn uniformly from `types` by the seed.
    ``make_example(s)[0]`` equals ``make_clip(s)[0]``.
    """
    video, facts = make_clip(seed, frames, size)
    rng = np.random.default_rng([int(seed), 7])
    if qtype is None:
        qtype = types[int(rng.integers(0, len(types)))]
    question, answer = make_question(facts, qtype, rng, paraphrase)
    return video, question, answer


def question_type_of(question: str) -> str:
    """The type of a question made by :func:`make_question` (templates are unambiguous)."""
    for qtype, templates in TEMPLATES.items():
        for t in templates:
            pattern = re.escape(t).replace(r"\{object\}", r"\w+ \w+")
            pattern = re.sub(r"\\\{\w+\\\}", r"\\w+", pattern)
            if re.fullmatch(pattern, question):
                return qtype
    raise ValueError(f"not a known question: {question!r}")
