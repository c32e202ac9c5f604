"""specvlm.selectors: the budget and the table of built-in selectors."""

from __future__ import annotations

import pytest
import torch

from specvlm import selectors


@pytest.mark.parametrize(
    "tokens,drop_rate,keep",
    [
        (10, 0.9, 1),  # int(10 * (1 - 0.9)) is 0 in binary floating point
        (1960, 0.9, 196),  # and 195 here
        (128, 0.9, 12),
        (128, 0.0, 128),
        (7, 0.5, 3),
        (1, 0.999, 0),
        (0, 0.5, 0),
        (100, 0.7, 30),
        (1000, 0.95, 50),
    ],
)
def test_keep_count_is_exact(tokens, drop_rate, keep):
    assert selectors.keep_count(tokens, drop_rate) == keep


def test_keep_count_never_exceeds_the_float_floor_by_more_than_one():
    for tokens in range(0, 300, 7):
        for rate in (0.1, 0.25, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95):
            kept = selectors.keep_count(tokens, rate)
            assert 0 <= kept <= tokens
            assert kept - int(tokens * (1 - rate)) in (0, 1)


def test_built_in_table_and_errors():
    assert selectors.NAMES == (
        "two_stage", "attention", "uniform", "random", "similarity", "semantic"
    )  # fmt: skip
    scores = torch.rand(24)
    features = selectors.VideoFeatures(torch.randn(24, 8), torch.randn(3, 8))
    for name in selectors.NAMES:
        select = selectors.resolve(name, mass=0.4, seed=3)
        idx = selectors.run_selector(select, scores, 5, (2, 3, 4), features)
        assert idx.numel() == 5 and bool((idx[1:] > idx[:-1]).all())
        assert selectors.needs_features(select) == (name in ("similarity", "semantic"))
    with pytest.raises(ValueError, match="selector must be one of"):
        selectors.resolve("best", mass=0.4, seed=0)
    with pytest.raises(ValueError, match="selector must be one of"):
        selectors.resolve(3, mass=0.4, seed=0)


def test_similarity_keeps_the_tokens_most_like_the_question():
    """The question's direction is e0; the kept tokens are the ones closest to it, whatever the
    target's scores say, and however long the vectors are (cosine, not dot product)."""
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(12, 6, generator=gen)
    video[:, 0] = 0.0
    video[[2, 7, 11], 0] = torch.tensor([5.0, 50.0, 9.0])  # aligned with the question
    video[7] *= 100  # length does not count
    question = torch.zeros(2, 6)
    question[:, 0] = torch.tensor([1.0, 3.0])
    features = selectors.VideoFeatures(video, question)
    select = selectors.resolve("similarity", mass=0.4, seed=0)
    scores = torch.zeros(12)
    scores[[0, 1, 3]] = 1.0  # the attention says otherwise
    assert selectors.run_selector(select, scores, 3, (3, 2, 2), features).tolist() == [2, 7, 11]


def test_semantic_keeps_what_differs_from_its_neighbours():
    """A uniform background with two odd tokens: those two are kept first; a grid of one frame
    or one row has fewer neighbours and still works."""
    t, h, w, d = 4, 3, 3, 5
    video = torch.zeros(t, h, w, d)
    video[..., 0] = 1.0  # the background
    video[1, 1, 2] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])
    video[3, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])
    features = selectors.VideoFeatures(video.reshape(-1, d), torch.ones(1, d))
    select = selectors.resolve("semantic", mass=0.4, seed=0)
    kept = selectors.run_selector(select, torch.rand(t * h * w), 2, (t, h, w), features)
    assert kept.tolist() == sorted([1 * 9 + 1 * 3 + 2, 3 * 9 + 0])
    for grid in ((1, 3, 3), (4, 1, 3), (1, 1, 9), (1, 1, 1)):
        n = grid[0] * grid[1] * grid[2]
        one = selectors.VideoFeatures(torch.randn(n, d), torch.ones(1, d))
        assert selectors.run_selector(select, torch.rand(n), 1, grid, one).numel() == 1
    ranks = selectors.local_distinctness(
        selectors.VideoFeatures(torch.randn(9, d), torch.ones(1, d)), (1, 1, 9)
    )
    assert bool(torch.isfinite(ranks).all())


def test_feature_selectors_need_the_features():
    select = selectors.resolve("semantic", mass=0.4, seed=0)
    with pytest.raises(ValueError, match="reads the video's features"):
        selectors.run_selector(select, torch.rand(8), 2, (2, 2, 2))
    wrong = selectors.VideoFeatures(torch.randn(6, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"video features of shape \(6, 4\) for 8 video tokens"):
        selectors.run_selector(select, torch.rand(8), 2, (2, 2, 2), wrong)


def test_the_vllm_plugin_refuses_the_feature_selectors():
    from specvlm.vllm_plugin import validated_settings

    for name in ("similarity", "semantic"):
        with pytest.raises(ValueError, match=f"selector '{name}' reads the draft's video features"):
            validated_settings(drop_rate=0.9, mass=0.4, selector=name, draft_sampled=False)


def test_video_features_take_the_grid_rows_and_the_question_after_the_video():
    """Rows of the draft's decoder inputs: the grid tokens in grid order, the text after the
    last video placeholder as the question; with no text after the video, all the text (the
    always-kept extra placeholder left out)."""
    from specvlm.families.base import VideoLayout
    from specvlm.speculation import video_features

    embeds = torch.arange(12, dtype=torch.float32)[:, None].repeat(1, 3)  # row i holds i
    layout = VideoLayout(torch.tensor([2, 3, 5, 6]), (1, 2, 2), (7,), text_start=8)
    features = video_features(embeds, layout)
    assert features.video[:, 0].tolist() == [2, 3, 5, 6]
    assert features.question[:, 0].tolist() == [8, 9, 10, 11]
    tail = VideoLayout(torch.tensor([6, 7, 9, 10]), (1, 2, 2), (11,), text_start=12)
    assert video_features(embeds, tail).question[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 8]


def test_similarity_refuses_a_prompt_without_text():
    select = selectors.resolve("similarity", mass=0.4, seed=0)
    empty = selectors.VideoFeatures(torch.randn(8, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="needs text beside the video; the prompt has none"):
        selectors.run_selector(select, torch.rand(8), 2, (2, 2, 2), empty)
