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
    assert selectors.NAMES == ("two_stage", "attention", "uniform", "random")
    scores = torch.rand(24)
    for name in selectors.NAMES:
        select = selectors.resolve(name, mass=0.4, seed=3)
        idx = selectors.run_selector(select, scores, 5, (2, 3, 4))
        assert idx.numel() == 5 and bool((idx[1:] > idx[:-1]).all())
    with pytest.raises(ValueError, match="selector must be one of"):
        selectors.resolve("best", mass=0.4, seed=0)
    with pytest.raises(ValueError, match="selector must be one of"):
        selectors.resolve(3, mass=0.4, seed=0)
