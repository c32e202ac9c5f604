"""Position ids: the draft's pruned prompt and the decoded tokens, against the stock models.

* Prompt positions are what the family's own wrapper hands its decoder; for M-RoPE families
  that must be the stock rope index (``model.model.get_rope_index``).
* The draft keeps the columns of its kept tokens (M-RoPE always; 1-D with ``"original"``).
* Decoding continues exactly where stock ``generate`` does (checked with a hook on the decoder).
"""

from __future__ import annotations

import pytest
import torch

from specvlm import positions
from specvlm.decoder import capture_decoder_inputs
from specvlm.families import family_of
from tests import tiny_models as tm


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with tm.single_threaded():
        yield


_MODELS: dict = {}


def target(family):
    if family not in _MODELS:
        _MODELS[family] = tm.make_pair(family)[0]
    return _MODELS[family]


def captured(family, inputs):
    model = target(family)
    dec = family_of(model).decoder(model)
    with torch.no_grad():
        got = capture_decoder_inputs(model, dec, inputs)
    return positions.prompt_positions(
        got.position_ids, inputs["input_ids"].shape[1], family_of(model).mrope, "cpu"
    )


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("frames,before,after", [(4, 5, 6), (3, 0, 2), (2, 9, 1)])
def test_mrope_prompt_positions_are_the_stock_rope_index(family, frames, before, after):
    model = target(family)
    inputs = tm.make_inputs(family, model, frames=frames, text_before=before, text_after=after)
    kw = {k: inputs[k] for k in ("video_grid_thw", "second_per_grid_ts") if k in inputs}
    stock, _ = model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        attention_mask=inputs["attention_mask"],
        **kw,
    )
    got = captured(family, inputs)
    # generate (transformers >= 5.2x) passes [text; t; h; w]: the last three rows are M-RoPE's
    assert got.shape[0] in (3, 4)
    assert torch.equal(got[-3:], stock)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_decode_positions_continue_like_stock_generate(family):
    """Our first decoded position (per row) is the one stock generate feeds at its first step."""
    model = target(family)
    inputs = tm.make_inputs(family, model, text_before=4, text_after=1)
    fed = []
    dec = family_of(model).decoder(model)
    hook = dec.register_forward_pre_hook(
        lambda m, a, kw: fed.append(kw.get("position_ids")), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model.generate(**inputs, do_sample=False, max_new_tokens=3)
    finally:
        hook.remove()
    first_step = fed[1]
    nxt = positions.next_positions(captured(family, inputs))
    ours = positions.decode_positions(family_of(model).mrope, nxt, torch.arange(2), "cpu")
    if first_step is None:  # the decoder then counts from its cache length
        stock = torch.tensor([[inputs["input_ids"].shape[1]]])
    elif family_of(model).mrope:
        stock = first_step[-ours.shape[0] :]  # generate passes [text; t; h; w] (5.2x) or [t; h; w]
    else:
        stock = first_step
    assert ours[..., :1].tolist() == stock.tolist()
    assert ours[..., 1].tolist() == (stock[..., 0] + 1).tolist()  # every row advances by one


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_pruned_mrope_positions_are_kept_columns(family):
    model = target(family)
    inputs = tm.make_inputs(family, model, frames=3)
    full = captured(family, inputs)
    grid = tm.video_token_positions(family, model, inputs).flatten()
    keep = torch.ones(full.shape[-1], dtype=torch.bool)
    keep[grid[1::3]] = False  # drop a third of the video tokens
    pruned = positions.draft_positions(full, keep, "original")
    assert pruned.shape == (full.shape[0], 1, int(keep.sum()))
    assert torch.equal(pruned, full[..., keep])
    # The text after the video keeps its stock positions, so decoding continues identically.
    assert torch.equal(positions.next_positions(pruned), positions.next_positions(full))


def test_one_d_positions_compact_and_original():
    full = torch.arange(10)[None]
    keep = torch.tensor([1, 1, 0, 0, 1, 0, 1, 1, 1, 1], dtype=torch.bool)
    assert positions.draft_positions(full, keep, "compact").tolist() == [[0, 1, 2, 3, 4, 5, 6]]
    original = positions.draft_positions(full, keep, "original")
    assert original.tolist() == [[0, 1, 4, 6, 7, 8, 9]]
    assert positions.next_positions(original).tolist() == [10]
    compact = positions.draft_positions(full, keep, "compact")
    assert positions.next_positions(compact).tolist() == [7]
    with pytest.raises(ValueError, match="1-D RoPE only"):
        positions.draft_positions(full[None].expand(3, 1, 10), keep, "compact")
    with pytest.raises(ValueError, match="mode"):
        positions.draft_positions(full, keep, "gapped")


def test_text_only_prompt_positions():
    ids = positions.prompt_positions(None, 5, True, "cpu")
    assert ids.shape == (3, 1, 5) and ids[2, 0].tolist() == [0, 1, 2, 3, 4]
    assert positions.prompt_positions(None, 5, False, "cpu").tolist() == [[0, 1, 2, 3, 4]]
