"""specvlm.tools.comparison and .timing: method comparison records on tiny random models."""

from __future__ import annotations

import pytest
import torch

from specvlm.tools.comparison import METHODS, compare, run_method
from specvlm.tools.timing import Timing, TimingStreamer, fastest, time_alternately, timed
from tests import tiny_models as tm


@pytest.fixture(autouse=True)
def _setup(monkeypatch):
    monkeypatch.setenv("SPECVLM_KERNELS_BACKEND", "reference")
    with tm.single_threaded():
        yield


def test_compare_records_every_method():
    """Every method, the compiled baseline included (the one test that compiles: transformers
    takes its compiled path on the CPU, once per shape, in an untimed warm-up)."""
    target, draft = tm.make_pair("llava_onevision")
    inputs = tm.make_inputs("llava_onevision", target, seed=1)
    compiled_paths = []
    real = target.get_compiled_call

    def spy(config):
        compiled_paths.append(config)
        return real(config)

    target.get_compiled_call = spy  # transformers asks for it only when it compiles
    records = compare(target, draft, inputs, max_new_tokens=6, drop_rate=0.5, frames=4, repeats=2)
    del target.get_compiled_call
    assert [r["method"] for r in records] == list(METHODS)
    by = {r["method"]: r for r in records}
    compiled = by["autoregressive_compiled"]
    assert compiled["error"] is None and compiled["identical"] is True
    assert len(compiled_paths) == 3  # the warm-up and both timed runs took the compiled path
    assert compiled["warmup_s"] > 0  # the warm-up ran once, outside the timings
    _, again = run_method("autoregressive_compiled", target, draft, inputs, max_new_tokens=6)
    assert again["warmup_s"] == 0.0 and again["error"] is None  # this shape is warm already
    assert compiled["decode_speedup_vs_compiled"] == pytest.approx(1.0)
    for rec in records:  # every speedup against both baselines
        if rec["error"] is None:
            assert rec["decode_speedup_vs_compiled"] == pytest.approx(
                rec["decode_speedup"] * compiled["decode_s"] / by["autoregressive"]["decode_s"]
            )
            assert rec["e2e_speedup_vs_compiled"] > 0
    assert all(isinstance(by[m]["captured"], bool) for m in ("naive_sd", "specvlm", "auto"))
    for rec in records:
        assert rec["frames"] == 4
        if rec["error"] is None:
            assert rec["identical"] is True, rec
            assert rec["new_tokens"] == 6
            assert 0 < rec["ttft_s"] <= rec["e2e_s"] and rec["decode_s"] >= 0
            assert rec["decode_speedup"] > 0 and rec["e2e_speedup"] > 0
        else:  # a failing upstream baseline is kept with its message
            assert rec["identical"] is None and rec["e2e_s"] is None
    assert by["autoregressive"]["e2e_speedup"] == pytest.approx(1.0)
    assert by["naive_sd"]["drop_rate"] == 0.0 and by["specvlm"]["drop_rate"] == 0.5
    assert by["specvlm"]["kept_video_tokens"] == by["specvlm"]["video_tokens"] // 2
    assert by["specvlm"]["mean_accepted_length"] >= 1.0


@pytest.mark.parametrize("capture", [False, "auto"])
def test_capture_goes_to_every_specvlm_decoder(accelerate_calls, capture):
    """``capture=`` reaches every decoder built (auto and naive SD alike, so the comparison
    stays fair), and each record says what its call ran (``captured``)."""
    target, draft = tm.make_pair("llava_onevision")
    inputs = tm.make_inputs("llava_onevision", target, seed=1)
    methods = ("autoregressive", "naive_sd", "specvlm", "auto", "random")
    records = compare(target, draft, inputs, methods, max_new_tokens=4, capture=capture)
    given = [call.get("capture", "missing") for call in accelerate_calls]
    assert len(given) == 4 and set(given) == {capture}
    for rec in records[1:]:
        assert rec["error"] is None and rec["identical"] is True
        assert isinstance(rec["captured"], bool)
        if capture is False:
            assert rec["captured"] is False


def test_failing_method_is_recorded_not_raised():
    target, draft = tm.make_pair("llava_onevision")
    inputs = tm.make_inputs("llava_onevision", target, seed=2)
    inputs = {**inputs, "num_beams": 2}  # refused by specvlm: recorded as an error
    out, rec = run_method("specvlm", target, draft, inputs, max_new_tokens=3)
    assert out is None and rec["error"].startswith("NotImplementedError")
    with pytest.raises(ValueError, match="method must be one of"):
        run_method("beam", target, draft, inputs, max_new_tokens=3)


def test_compare_samples_with_a_seed_and_keeps_every_run():
    """Sampling: every method samples with the same options and seed (so every repeat draws the
    same sample), outputs are not compared (identical None), speedups are per token, and every
    repeat's times are kept."""
    target, draft = tm.make_pair("llava_onevision")
    inputs = tm.make_inputs("llava_onevision", target, seed=1)
    sampling = {"do_sample": True, "temperature": 0.8, "top_k": 5}
    methods = ("autoregressive", "specvlm", "random")
    records = compare(
        target, draft, inputs, methods, max_new_tokens=6, sampling=sampling, seed=3, repeats=2
    )
    for rec in records:
        assert rec["error"] is None and rec["mode"] == "sample"
        assert rec["identical"] is None
        assert len(rec["runs"]) == 2 and all(r["new_tokens"] == 6 for r in rec["runs"])
        assert rec["decode_speedup"] > 0
    again = compare(target, draft, inputs, methods, max_new_tokens=6, sampling=sampling, seed=3)
    assert [r["new_tokens"] for r in again] == [r["new_tokens"] for r in records]
    out_a, _ = run_method("specvlm", target, draft, inputs, max_new_tokens=6, sampling=sampling)
    out_b, _ = run_method("specvlm", target, draft, inputs, max_new_tokens=6, sampling=sampling)
    assert out_a.tolist() == out_b.tolist()  # seeded: the same sample
    greedy = compare(target, draft, inputs, methods, max_new_tokens=6)
    assert all(r["identical"] is True and r["mode"] == "greedy" for r in greedy)


def test_assisted_generation_deprecation_message_is_dropped():
    """transformers' assisted generation calls the assistant's generate with a generation_config
    and length arguments; the deprecation message that follows broke the bench's progress bar."""
    import logging

    from specvlm.tools.comparison import _quiet_assistant

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    log = logging.getLogger("transformers.generation.utils")
    keep = Keep()
    log.addHandler(keep)
    try:
        with _quiet_assistant():
            log.warning("Passing `generation_config` together with generation-related x")
            log.warning("another message")
        log.warning("Passing `generation_config` together with generation-related y")
    finally:
        log.removeHandler(keep)
    assert keep.messages == [
        "another message",
        "Passing `generation_config` together with generation-related y",
    ]


def test_timing_streamer_splits_prefill_and_decode():
    def fake_generate(streamer: TimingStreamer):
        streamer.put(torch.tensor([[1, 2, 3]]))
        for tok in range(4):
            streamer.put(torch.tensor([tok]))
        streamer.end()
        return torch.tensor([[1, 2, 3, 0, 1, 2, 3]])

    out, timing = timed(fake_generate)
    assert out.shape == (1, 7) and timing.new_tokens == 4
    assert timing.e2e_s >= timing.ttft_s >= 0 and timing.decode_s >= 0


def test_fastest_takes_each_minimum():
    runs = [
        Timing(5, 0.3, 0.8, 1.1, 5.0),
        Timing(5, 0.2, 0.9, 1.2, 4.4),
        Timing(5, 0.4, 0.5, 1.0, 8.0),
    ]
    best = fastest(runs)
    assert (best.new_tokens, best.ttft_s, best.decode_s, best.e2e_s) == (5, 0.2, 0.5, 1.0)
    assert best.decode_tokens_per_s == pytest.approx(4 / 0.5)
    with pytest.raises(ValueError, match="at least one"):
        fastest([])


def test_compare_repeats_alternate_and_keep_the_fastest(monkeypatch):
    import specvlm.tools.comparison as e2e

    calls, times = [], iter([0.5, 0.9, 0.3, 0.4, 0.7, 0.2])  # ar, sd, ar, sd, ar, sd

    def fake_run(method, *args, **kwargs):
        calls.append(method)
        t = next(times)
        rec = {
            "method": method,
            "mean_accepted_length": None,
            "error": None,
            "new_tokens": 5,
            "decode_s": t,
            "e2e_s": 2 * t,
            "ttft_s": t / 2,
            "decode_tokens_per_s": 0.0,
            "peak_memory_bytes": None,
        }
        return torch.tensor([[1, 2, 3]]), rec

    monkeypatch.setattr(e2e, "run_method", fake_run)
    records = compare(None, None, {}, ("autoregressive", "specvlm"), max_new_tokens=5, repeats=3)
    assert calls == ["autoregressive", "specvlm"] * 3
    by = {r["method"]: r for r in records}
    assert by["autoregressive"]["decode_s"] == 0.3 and by["specvlm"]["decode_s"] == 0.2
    assert by["specvlm"]["e2e_s"] == 0.4 and by["specvlm"]["ttft_s"] == 0.1
    assert by["specvlm"]["decode_speedup"] == pytest.approx(1.5)
    assert by["specvlm"]["decode_tokens_per_s"] == pytest.approx(4 / 0.2)
    assert all(r["identical"] is True for r in records)
    with pytest.raises(ValueError, match="repeats"):
        compare(None, None, {}, max_new_tokens=5, repeats=0)


def test_time_alternately_takes_turns():
    calls = []

    def method(name):
        def generate(streamer):
            calls.append(name)
            streamer.put(torch.tensor([[7]]))
            streamer.put(torch.tensor([len(calls)]))
            streamer.end()
            return torch.tensor([[7, len(calls)]])

        return generate

    timings = time_alternately({"a": method("a"), "b": method("b")}, 3)
    assert calls == ["a", "b"] * 3
    outs, best = timings["b"]
    assert [o.tolist() for o in outs] == [[[7, 2]], [[7, 4]], [[7, 6]]]
    assert best.new_tokens == 1 and best.e2e_s >= best.ttft_s >= 0
    with pytest.raises(ValueError, match="repeats"):
        time_alternately({"a": method("a")}, 0)
