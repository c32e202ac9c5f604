"""specvlm.micro.clips: determinism, facts <-> pixels consistency, answers determined by facts."""

import numpy as np
import pytest

from specvlm.micro import clips
from specvlm.micro.clips import (
    COLOURS,
    QUESTION_TYPES,
    SHAPES,
    WORDS,
    answer_for,
    make_clip,
    make_example,
    make_question,
    question_type_of,
    render,
    token_coverage,
)

SEEDS = range(60)


def test_make_clip_is_deterministic():
    for seed in (0, 1, 12345, 10**9 + 7):
        v1, f1 = make_clip(seed)
        v2, f2 = make_clip(seed)
        assert v1.dtype == np.uint8 and v1.shape == (8, 64, 64, 3)
        assert np.array_equal(v1, v2) and f1 == f2
    assert not np.array_equal(make_clip(0)[0], make_clip(1)[0])


def test_make_example_is_deterministic_and_shares_the_clip():
    for seed in range(20):
        v1, q1, a1 = make_example(seed)
        v2, q2, a2 = make_example(seed)
        assert np.array_equal(v1, v2) and (q1, a1) == (q2, a2)
        assert np.array_equal(v1, make_clip(seed)[0])


def test_other_geometries():
    video, facts = make_clip(3, frames=4, size=32)
    assert video.shape == (4, 32, 32, 3) and facts["frames"] == 4


def test_facts_are_well_formed():
    for seed in SEEDS:
        _, facts = make_clip(seed)
        objs = facts["objects"]
        assert 1 <= len(objs) <= 3
        assert len({o["shape"] for o in objs}) == len(objs)  # distinct shapes
        assert len({o["colour"] for o in objs}) == len(objs)  # distinct colours
        assert [o["shape"] for o in objs] == sorted((o["shape"] for o in objs), key=SHAPES.index)
        for o in objs:
            assert 16 <= o["side"] <= 22  # >= 2 patches of 8 px
            assert sum(o["visible"]) >= 3
            for t, (x, y) in enumerate(o["positions"]):
                assert 0 <= x and x + o["side"] <= 64 and 0 <= y and y + o["side"] <= 64
                assert o["visible"][t] == (
                    o["appear"] <= t and (o["disappear"] is None or t < o["disappear"])
                )


def test_pixels_match_facts():
    """Every visible object shows its colour at its centre; invisible ones leave no pixel."""
    for seed in SEEDS:
        video, facts = make_clip(seed)
        assert np.array_equal(render(facts), video)
        present = set()
        for t in range(facts["frames"]):
            frame = video[t]
            colours_in_frame = {
                name for name, rgb in COLOURS.items() if (frame == np.array(rgb)).all(-1).any()
            }
            expected = {o["colour"] for o in facts["objects"] if o["visible"][t]}
            assert colours_in_frame == expected, (seed, t)
            present |= expected
            for o in facts["objects"]:
                if o["visible"][t]:
                    x, y = o["positions"][t]
                    c = o["side"] // 2
                    assert tuple(frame[y + c, x + c]) == COLOURS[o["colour"]]
        # background everywhere else
        bg = (video == np.array(facts["background"], dtype=np.uint8)).all(-1)
        assert bg.mean() > 0.5


@pytest.mark.parametrize("grid", [(4, 4), (8, 8), (2, 4)])
def test_token_coverage_matches_pixels(grid):
    rows, cols = grid
    for seed in range(12):
        video, facts = make_clip(seed)
        cov = token_coverage(facts, grid)
        assert cov.shape == (len(facts["objects"]), facts["frames"] * rows * cols)
        assert cov.min() >= 0 and cov.sum(0).max() <= 1  # objects never overlap
        for i, o in enumerate(facts["objects"]):
            colour = (video == np.array(COLOURS[o["colour"]])).all(-1)  # [T, S, S]
            t_, s_ = colour.shape[0], colour.shape[1]
            want = colour.reshape(t_, rows, s_ // rows, cols, s_ // cols).mean(axis=(2, 4))
            np.testing.assert_allclose(cov[i], want.reshape(-1), atol=1e-12)
    with pytest.raises(ValueError, match="does not tile"):
        token_coverage(make_clip(0)[1], (5, 4))


def test_motion_is_visible_in_pixels():
    for seed in SEEDS:
        video, facts = make_clip(seed)
        for o in facts["objects"]:
            ts = [t for t in range(8) if o["visible"][t]]
            first, last = ts[0], ts[-1]
            mask_first = (video[first] == np.array(COLOURS[o["colour"]])).all(-1)
            mask_last = (video[last] == np.array(COLOURS[o["colour"]])).all(-1)
            (y0, x0), (y1, x1) = (np.argwhere(m).mean(0) for m in (mask_first, mask_last))
            dx, dy = x1 - x0, y1 - y0
            expected = {
                "left": dx < -3,
                "right": dx > 3,
                "up": dy < -3,
                "down": dy > 3,
                "nowhere": abs(dx) < 1e-6 and abs(dy) < 1e-6,
            }
            assert expected[o["motion"]], (seed, o["motion"], dx, dy)


def test_answers_are_determined_by_facts():
    for seed in SEEDS:
        _, facts = make_clip(seed)
        objs = facts["objects"]
        n = len(objs)
        assert answer_for(facts, "count") == clips.NUMBERS[n]
        cap = answer_for(facts, "caption")
        assert cap == " and ".join(f"a {o['colour']} {o['shape']}" for o in objs) + " ."
        for o in objs:
            assert answer_for(facts, "colour", o["shape"]) == o["colour"]
            assert answer_for(facts, "shape", o["colour"]) == o["shape"]
            assert answer_for(facts, "motion", o["shape"]) == o["motion"]
            assert (
                answer_for(facts, "appear", o["shape"])
                == clips.NUMBERS[o["visible"].index(True) + 1]
            )
            gone = [t for t in range(o["visible"].index(True), 8) if not o["visible"][t]]
            assert answer_for(facts, "disappear", o["shape"]) == (
                clips.NUMBERS[gone[0] + 1] if gone else "never"
            )
        for c in COLOURS:
            for s in SHAPES:
                hit = any(o["colour"] == c and o["shape"] == s for o in objs)
                assert answer_for(facts, "exists", f"{c} {s}") == ("yes" if hit else "no")


def test_questions_types_and_vocabulary():
    seen = set()
    for seed in range(300):
        _, facts = make_clip(seed)
        for qtype in QUESTION_TYPES:
            rng = np.random.default_rng(seed)
            question, answer = make_question(facts, qtype, rng)
            assert question_type_of(question) == qtype
            assert all(w in WORDS for w in (question + " " + answer).split())
            assert question == " ".join(question.split()) and answer == " ".join(answer.split())
            seen.add((qtype, answer))
    # every answer of the closed-set types occurs
    for c in COLOURS:
        assert ("colour", c) in seen
    for s in SHAPES:
        assert ("shape", s) in seen
    for a in ("one", "two", "three"):
        assert ("count", a) in seen
    for a in ("yes", "no"):
        assert ("exists", a) in seen
    for m in clips.MOTIONS:
        assert ("motion", m) in seen
    assert ("disappear", "never") in seen and ("appear", "one") in seen
    assert 60 <= len(WORDS) <= 120


@pytest.mark.parametrize("qtype", QUESTION_TYPES)
def test_make_example_with_type(qtype):
    _, question, answer = make_example(5, qtype=qtype)
    assert question_type_of(question) == qtype and answer
