"""One model shared by threads (the concurrency contract in ``docs/design.md``).

Web apps call ``generate`` from worker threads, often on one model object. These tests run
``sd.generate`` and the target's own ``generate`` side by side on the same models:

* deterministic interleavings that used to go wrong (a call paused inside the loop while another
  runs start to finish; a plain ``generate`` while a SpecVLM call is inside its prefill
  capture), made with stopping criteria and forward hooks that wait on events;
* a mixed stress run per family: several threads, many rounds, every output equal to the
  single-threaded one, nothing raised, the models put back as they were;
* the automatic policy learning from calls in several threads.

Greedy fp32 on tiny random models, kernels through their references (their own tests cover
the Triton kernels).
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

import specvlm
from specvlm import decoder as decoder_module
from specvlm.decoder import attention_implementation_set_to
from specvlm.families import family_of
from tests import tiny_models as tm

NEW = 10
WAIT = 60.0  # seconds an event may take before a test fails (never reached when it works)


pytestmark = pytest.mark.usefixtures("one_thread", "reference_kernels")


@pytest.fixture(scope="module", params=tm.FAMILIES)
def family(request):
    return request.param


_SETUPS: dict = {}


def setup(family):
    """(target, draft, prompts, references): two videos and a text-only prompt, with the
    target's own greedy output for each."""
    if family not in _SETUPS:
        target, draft = tm.make_pair(family, seed=3)
        prompts = [
            tm.make_inputs(family, target, frames=2, seed=1),
            tm.make_inputs(family, target, frames=3, seed=2, text_after=9),
            tm.make_inputs(family, target, seed=3, video=False),
        ]
        refs = [greedy(target.generate, p) for p in prompts]
        _SETUPS[family] = target, draft, prompts, refs
    return _SETUPS[family]


def greedy(generate, inputs, **kw):
    with torch.no_grad():
        return generate(**inputs, max_new_tokens=NEW, do_sample=False, **kw).tolist()


def model_state(model):
    """What a call must leave as it found it: the attention implementation of every config the
    decoder's layers read, and no hooks on the decoder."""
    decoder = family_of(model, "model").decoder(model)
    hooks = len(decoder._forward_pre_hooks) + len(decoder._forward_hooks)
    return sorted(_impls(decoder)), hooks


def rope_deltas(model):
    """The M-RoPE offset Qwen models keep on the model (``generate`` reads it back when it
    continues from a cache); None for LLaVA-OneVision."""
    return getattr(model.model, "rope_deltas", None)


def _impls(decoder):
    return {m.config._attn_implementation for m in decoder.modules() if hasattr(m, "config")}


class PauseAtFirstToken(StoppingCriteria):
    """Stopping criteria that tell ``reached`` at the first token, then wait for ``go``: the
    call is then inside SpecVLM's loop (after the target's prefill, before speculation)."""

    def __init__(self):
        self.reached, self.go = threading.Event(), threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        if not self.reached.is_set():
            self.reached.set()
            assert self.go.wait(WAIT), "never released"
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def test_a_call_that_outlives_another_keeps_its_routing(family):
    """A enters the loop, B enters, A finishes, then B goes on: B's tree verification must
    still be routed (it used to be switched off by A's restore: wrong tokens, silently). A
    copy of the target drafts, so that most of the tree is accepted and every row counts."""
    target, _, prompts, refs = setup(family)
    draft = tm.make_copy_draft(target)
    sd = specvlm.accelerate((target, draft), drop_rate=0.0)
    pause_a, pause_b = PauseAtFirstToken(), PauseAtFirstToken()
    before = model_state(target), model_state(draft)
    deltas = _mark_rope_deltas(target)

    def call(prompt, pause):
        criteria = StoppingCriteriaList([pause])
        return greedy(sd.generate, prompts[prompt], stopping_criteria=criteria)

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(call, 0, pause_a)
        assert pause_a.reached.wait(WAIT)
        b = pool.submit(call, 1, pause_b)
        assert pause_b.reached.wait(WAIT)
        pause_a.go.set()
        assert a.result(WAIT) == refs[0]
        pause_b.go.set()
        assert b.result(WAIT) == refs[1]
    assert sd.last_stats.mean_accepted_length > 2  # B's tree was mostly accepted
    assert (model_state(target), model_state(draft)) == before
    assert rope_deltas(target) is deltas  # overlapping calls leave the M-RoPE state as it was


def _mark_rope_deltas(model):
    """Give a Qwen model a recognisable ``rope_deltas`` (a later ``generate`` continuing from a
    cache would read it) and return it."""
    if not hasattr(model.model, "rope_deltas"):
        return None
    model.model.rope_deltas = torch.tensor([[123]])
    return model.model.rope_deltas


def test_plain_generate_while_a_call_captures_the_decoder_inputs(family):
    """While SpecVLM's capture hook sits on the shared decoder (its call paused inside the
    vision tower), the target's own ``generate`` in another thread runs untouched."""
    target, draft, prompts, refs = setup(family)
    sd = specvlm.accelerate((target, draft), drop_rate=0.5)
    inside, go = threading.Event(), threading.Event()
    owner = []

    def pause_in_vision(module, args, kwargs):
        if threading.get_ident() == owner[0] and not inside.is_set():
            inside.set()
            assert go.wait(WAIT), "never released"

    vision = target.model.vision_tower if family == "llava_onevision" else target.model.visual

    def call():
        owner.append(threading.get_ident())
        return greedy(sd.generate, prompts[0])

    handle = vision.register_forward_pre_hook(pause_in_vision, with_kwargs=True)
    try:
        with ThreadPoolExecutor(1) as pool:
            spec = pool.submit(call)
            assert inside.wait(WAIT)
            assert len(family_of(target, "t").decoder(target)._forward_pre_hooks) == 1
            assert greedy(target.generate, prompts[1]) == refs[1]  # this thread, meanwhile
            go.set()
            assert spec.result(WAIT) == refs[0]
    finally:
        handle.remove()
    assert model_state(target)[1] == 0


def mixed_worker(sd, target, prompts, refs, seed, rounds):
    rng = random.Random(seed)
    outcomes = []
    for _ in range(rounds):
        i = rng.randrange(len(prompts))
        spec = rng.random() < 0.6
        try:
            out = greedy(sd.generate if spec else target.generate, prompts[i])
            outcomes.append((spec, i, out == refs[i], None))
        except Exception as err:  # noqa: BLE001 (every error is a failure, reported below)
            outcomes.append((spec, i, False, repr(err)))
    return outcomes


@pytest.mark.parametrize("policy", ["fixed", "auto"])
def test_threads_mixing_speculative_and_plain_generate(family, policy):
    """4 threads x 8 rounds: ``sd.generate`` (one shared object) and ``target.generate`` mixed
    at random; every output equals the single-threaded one, nothing raises, and the models'
    attention and hooks are as before. ``auto``: the policy chooses and learns in every
    thread."""
    target, draft, prompts, refs = setup(family)
    kwargs = {"drop_rate": 0.5} if policy == "fixed" else {}
    sd = specvlm.accelerate((target, draft), **kwargs)
    before = model_state(target), model_state(draft)
    with ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(mixed_worker, sd, target, prompts, refs, s, 8) for s in range(4)]
        outcomes = [o for job in jobs for o in job.result(600)]
    errors = [o for o in outcomes if o[3] is not None]
    wrong = [o for o in outcomes if o[3] is None and not o[2]]
    assert not errors, errors[:3]
    assert not wrong, wrong
    assert sum(o[0] for o in outcomes) > 0 and sum(not o[0] for o in outcomes) > 0
    assert (model_state(target), model_state(draft)) == before
    assert sd.last_stats is not None
    if policy == "auto":
        assert sd.policy.expected_new_tokens is not None  # it learned from the calls


def test_last_stats_are_the_calling_threads():
    target, draft, prompts, _ = setup("llava_onevision")
    sd = specvlm.accelerate((target, draft), drop_rate=0.5)
    greedy(sd.generate, prompts[0])
    mine = sd.last_stats

    def other():
        greedy(sd.generate, prompts[1])
        return sd.last_stats

    with ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(other).result(WAIT)
    assert theirs is not mine and sd.last_stats is mine
    assert theirs.video_tokens != mine.video_tokens  # 3 frames against 2

    with ThreadPoolExecutor(1) as pool:  # a thread that made no call sees the latest
        assert pool.submit(lambda: sd.last_stats).result(WAIT) is theirs


# -------------------------------------------------------------------------------------------
# The switch of the attention implementation, on its own
# -------------------------------------------------------------------------------------------
def test_overlapping_switches_restore_exactly_once():
    target, _, _, _ = setup("qwen2_5_vl")
    decoder = family_of(target, "t").decoder(target)
    assert _impls(decoder) == {"sdpa"}
    first = attention_implementation_set_to(decoder, "specvlm:sdpa")
    second = attention_implementation_set_to(decoder, "specvlm:sdpa")
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first out is not the last: still switched
    assert _impls(decoder) == {"specvlm:sdpa"}
    second.__exit__(None, None, None)
    assert _impls(decoder) == {"sdpa"}


def test_a_switch_restores_on_error_and_refuses_a_second_name():
    target, _, _, _ = setup("qwen2_5_vl")
    decoder = family_of(target, "t").decoder(target)
    with pytest.raises(ValueError, match="inside"):
        with attention_implementation_set_to(decoder, "specvlm:sdpa"):
            with pytest.raises(RuntimeError, match="another call"):
                with attention_implementation_set_to(decoder, "specvlm:eager"):
                    pass
            raise ValueError("inside")
    assert _impls(decoder) == {"sdpa"}


def test_a_stale_capture_hook_never_acts():
    """A forward that listed another capture's hook just before it was removed calls it without
    keywords: even inside a capture of the same decoder, that call must pass through (it used
    to record nothing and stop the forward)."""
    target, _, _, _ = setup("qwen2_5_vl")
    decoder = family_of(target, "t").decoder(target)
    token = decoder_module._CAPTURE.set((decoder, {}))
    try:
        assert decoder_module._capture_hook(decoder, (), None) is None
        with pytest.raises(decoder_module._Captured):
            decoder_module._capture_hook(decoder, (), {"inputs_embeds": None})
    finally:
        decoder_module._CAPTURE.reset(token)


def test_one_model_as_target_and_draft_from_threads():
    target, _, prompts, refs = setup("qwen3_vl")
    sd = specvlm.accelerate((target, target), drop_rate=0.5)
    before = model_state(target)
    with ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(greedy, sd.generate, prompts[i % 3]) for i in range(6)]
        assert [job.result(WAIT) for job in jobs] == [refs[i % 3] for i in range(6)]
    assert model_state(target) == before


class CallInside(StoppingCriteria):
    """Stopping criteria that, at the first token, make another ``generate`` call in the same
    thread (re-entering while the outer call is inside SpecVLM's loop)."""

    def __init__(self, call):
        self.call, self.result = call, None

    def __call__(self, input_ids, scores, **kwargs):
        if self.result is None:
            self.result = self.call()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


@pytest.mark.parametrize("inner", ["sd", "target"])
def test_generate_re_entered_from_a_callback(inner):
    target, draft, prompts, refs = setup("llava_onevision")
    sd = specvlm.accelerate((target, draft), drop_rate=0.5)
    inside = CallInside(
        lambda: greedy(sd.generate if inner == "sd" else target.generate, prompts[1])
    )
    out = greedy(sd.generate, prompts[0], stopping_criteria=StoppingCriteriaList([inside]))
    assert out == refs[0] and inside.result == refs[1]
    assert model_state(target)[0] == ["sdpa"]


def test_an_error_in_one_call_leaves_the_others_routed():
    """B raises (its selector fails) while A is paused inside its loop: A goes on routed and
    correct, and the models are put back once A is done."""
    target, _, prompts, refs = setup("qwen2_5_vl")
    draft = tm.make_copy_draft(target)
    sd = specvlm.accelerate((target, draft), drop_rate=0.0)

    def broken(scores, keep, grid):
        raise RuntimeError("selector failure")

    failing = specvlm.accelerate((target, draft), drop_rate=0.5, selector=broken)
    pause = PauseAtFirstToken()
    before = model_state(target), model_state(draft)
    with ThreadPoolExecutor(1) as pool:
        a = pool.submit(greedy, sd.generate, prompts[0], stopping_criteria=[pause])
        assert pause.reached.wait(WAIT)
        with pytest.raises(RuntimeError, match="selector failure"):
            greedy(failing.generate, prompts[1])
        assert model_state(target)[0] == ["specvlm:sdpa"]  # A still holds the switch
        pause.go.set()
        assert a.result(WAIT) == refs[0]
    assert sd.last_stats is not None and sd.last_stats.mean_accepted_length > 2
    assert (model_state(target), model_state(draft)) == before
