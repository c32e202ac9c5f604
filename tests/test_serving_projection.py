"""The vLLM serving projection (specvlm/tools/serving_projection.py): its arithmetic."""

from __future__ import annotations

import pytest

from specvlm.tools import serving_projection as sp


def test_tokens_per_step_is_the_expected_accepted_prefix_plus_one():
    assert sp.tokens_per_step(0.0, 4) == 1.0
    assert sp.tokens_per_step(1.0, 4) == 5.0
    # a = 0.5, k = 2: 1 + 0.5 + 0.25
    assert sp.tokens_per_step(0.5, 2) == pytest.approx(1.75)


def test_batched_drafting_equals_per_request_drafting_for_one_request():
    s = sp.SCENARIOS[0]
    per_request = sp.decode_speedup(s, 1, 0.8, drafting="per_request")
    batched = sp.decode_speedup(s, 1, 0.8, drafting="batched")
    assert per_request == pytest.approx(batched)


def test_per_request_drafting_falls_behind_as_the_batch_grows():
    s = sp.SCENARIOS[0]
    speedups = [sp.decode_speedup(s, b, 0.8, drafting="per_request") for b in (1, 4, 8)]
    assert speedups[0] > speedups[1] > speedups[2]
    assert sp.decode_speedup(s, 8, 0.8, drafting="batched") > speedups[2]


def test_more_acceptance_is_faster_and_the_table_has_every_row():
    s = sp.SCENARIOS[1]
    assert sp.decode_speedup(s, 4, 0.8, drafting="batched") > sp.decode_speedup(
        s, 4, 0.6, drafting="batched"
    )
    lines = sp.table().splitlines()
    assert len(lines) == 2 + len(sp.SCENARIOS) * 2 * len(sp.MODES)


def test_a_persistent_cache_saves_exactly_the_copies():
    s = sp.SCENARIOS[0]
    one = [sp.drafting_seconds(s, 1, mode, "replicated") for mode in ("batched", "persistent")]
    assert one[0] == pytest.approx(one[1])  # one request: no copy either way
    batched, persistent = (sp.drafting_seconds(s, 8, m, "replicated") for m in sp.DRAFTING[1:])
    draft = sp.MODELS[s.draft]
    ctx = s.text_tokens + int(s.video_tokens * (1 - s.drop_rate)) + s.new_tokens // 2
    copies = s.k * 4 * 2 * draft.kv_bytes_per_token() * 8 * ctx / sp.H100.bandwidth
    assert batched - persistent == pytest.approx(copies)
    assert sp.decode_speedup(s, 8, 0.8, drafting="persistent") > sp.decode_speedup(
        s, 8, 0.8, drafting="batched"
    )


def test_a_tensor_parallel_draft_splits_its_reads_and_pays_two_all_reduces_per_layer():
    s = sp.SCENARIOS[1]  # 4 GPUs
    draft, gpu = sp.MODELS[s.draft], sp.H100
    ctx = s.text_tokens + int(s.video_tokens * (1 - s.drop_rate)) + s.new_tokens // 2
    sharded = sp.drafting_seconds(s, 1, "persistent", "tensor_parallel")
    head = sp.DRAFT_HEAD_PARAMS[s.draft] * draft.bytes_per_param
    # weights (the output projection whole on every rank) and KV split over the 4 GPUs
    reads = (draft.weight_bytes - head) / 4 + head + draft.kv_bytes_per_token() * (ctx + 1) / 4
    fixed = draft.layers * (gpu.captured_us + 2 * gpu.allreduce_us) * 1e-6
    assert sharded == pytest.approx(s.k * (reads / gpu.bandwidth + fixed))
    replicated = sp.drafting_seconds(s, 1, "persistent", "replicated")
    assert sharded < replicated
    # one GPU: nothing to split
    single = sp.ServingScenario(s.target, s.draft, 1, s.video_tokens)
    assert sp.drafting_seconds(single, 4, "persistent", "tensor_parallel") == pytest.approx(
        sp.drafting_seconds(single, 4, "persistent", "replicated")
    )


def test_unknown_modes_are_refused():
    with pytest.raises(ValueError, match="drafting must be one of"):
        sp.drafting_seconds(sp.SCENARIOS[0], 1, "copies", "replicated")
