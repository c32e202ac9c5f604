"""specvlm.generation: options, logits processing and stopping exactly as ``target.generate``.

The reference is transformers' own ``generate`` on tiny random models (tests/tiny_models.py):
``generate(..., output_scores=True, output_logits=True)`` returns the raw logits and the processed
scores of every step, and :func:`~specvlm.generation.process_scores` must turn the former into the
latter bit for bit, all steps at once as rows of different lengths (as tree rows are). Rows off
generate's path are checked against generate's processor list called on each batch-1 row.
Every ``GenerationConfig`` field and ``generate`` keyword is classified here: honoured (the test
that covers it named) or refused (with a one-line error), and a new one fails until classified.
"""

from __future__ import annotations

import copy
import inspect
import re
import time

import pytest
import torch
from transformers import GenerationConfig, WatermarkingConfig
from transformers.generation import (
    EosTokenCriteria,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor
from transformers.generation.utils import GenerationMixin

from specvlm import generation as gen
from tests import tiny_models as tm

N = 8  # new tokens per reference generate call
FAMILY = "qwen2_5_vl"
EOS = tm.EOS_TOKEN_ID


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with tm.single_threaded():
        yield


_PAIRS: dict = {}


def pair(family=FAMILY):
    if family not in _PAIRS:
        _PAIRS[family] = tm.make_pair(family, seed=0)
    return _PAIRS[family]


def split(inputs):
    return inputs["input_ids"], {k: v for k, v in inputs.items() if k != "input_ids"}


def setup_for(target, inputs, generation_config=None, **options):
    input_ids, rest = split(inputs)
    return gen.resolve(target, input_ids, generation_config, dict(rest, **options))


def reference(target, inputs, **options):
    """generate's sequences, raw logits [n, V] and processed scores [n, V]."""
    torch.manual_seed(0)
    out = target.generate(
        **inputs, return_dict_in_generate=True, output_scores=True, output_logits=True, **options
    )
    return out.sequences, torch.cat(out.logits), torch.cat(out.scores)


def greedy_tokens(family=FAMILY, seed=1):
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=seed)
    out = target.generate(**inputs, max_new_tokens=N, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


# -------------------------------------------------------------------------------------------
# Options, each run through generate and through process_scores
# -------------------------------------------------------------------------------------------
class LastTokenBias(LogitsProcessor):
    """A user processor: a bias that depends on the last token of each row."""

    def __call__(self, input_ids, scores):
        bias = torch.zeros_like(scores)
        bias[torch.arange(scores.shape[0]), (input_ids[:, -1] * 7) % scores.shape[1]] = 5.0
        return scores + bias


SEEN_BATCH_IDS: list[int] = []


def allowed_tokens(batch_id, sent):
    SEEN_BATCH_IDS.append(batch_id)
    last = int(sent[-1])
    return [t for t in range(tm.NUM_TEXT_TOKENS) if (t + last) % 3 != 0]


QWEN2_5_VL_SHIPPED = dict(
    do_sample=True, top_k=1, top_p=0.001, temperature=0.1, repetition_penalty=1.05
)
QWEN3_VL_8B_SHIPPED = dict(do_sample=True, temperature=0.7, top_p=0.8, top_k=20)


def options(tokens, prompt_length):
    """Option sets (kwargs of generate) built around the greedy continuation ``tokens``."""
    a, b, c = tokens[0], tokens[1], tokens[2]
    return {
        "repetition_penalty": dict(repetition_penalty=1.3),
        "repetition_penalty_below_1": dict(repetition_penalty=0.8),
        "encoder_repetition_penalty": dict(encoder_repetition_penalty=1.5),
        "temperature": dict(do_sample=True, temperature=0.6, top_k=0),
        "top_k": dict(do_sample=True, top_k=4),
        "top_p": dict(do_sample=True, top_p=0.7, top_k=0),
        "min_p": dict(do_sample=True, min_p=0.2, top_k=0),
        "top_h": dict(do_sample=True, top_h=0.6),
        "typical_p": dict(do_sample=True, typical_p=0.6),
        "epsilon_cutoff": dict(do_sample=True, epsilon_cutoff=0.02),
        "eta_cutoff": dict(do_sample=True, eta_cutoff=0.02),
        "no_repeat_ngram_size": dict(no_repeat_ngram_size=2),
        "encoder_no_repeat_ngram_size": dict(encoder_no_repeat_ngram_size=2),
        "bad_words_ids": dict(bad_words_ids=[[b], [a, c]]),
        "suppress_tokens": dict(suppress_tokens=[a, c]),
        "begin_suppress_tokens": dict(begin_suppress_tokens=[a]),
        "min_new_tokens": dict(min_new_tokens=5, eos_token_id=[EOS, b]),
        "min_length": dict(min_length=prompt_length + 4, eos_token_id=[EOS, c]),
        "sequence_bias": dict(sequence_bias=[[[a], -3.0], [[a, b], 4.0]]),
        "forced_bos_token_id": dict(forced_bos_token_id=c),
        "forced_eos_token_id": dict(forced_eos_token_id=c),
        "exponential_decay_length_penalty": dict(
            exponential_decay_length_penalty=(2, 1.6), eos_token_id=[EOS, c]
        ),
        "remove_invalid_values": dict(remove_invalid_values=True),
        "renormalize_logits": dict(renormalize_logits=True, repetition_penalty=1.2),
        "user_logits_processor": dict(logits_processor=LogitsProcessorList([LastTokenBias()])),
        "user_processor_replaces_default": dict(
            repetition_penalty=1.3,
            logits_processor=LogitsProcessorList([RepetitionPenaltyLogitsProcessor(2.0)]),
        ),
        "prefix_allowed_tokens_fn": dict(prefix_allowed_tokens_fn=allowed_tokens),
        "qwen2_5_vl_shipped": QWEN2_5_VL_SHIPPED,
        "qwen3_vl_8b_shipped": QWEN3_VL_8B_SHIPPED,
        "mixed": dict(
            do_sample=True,
            repetition_penalty=1.2,
            no_repeat_ngram_size=3,
            temperature=0.8,
            top_k=10,
            top_p=0.9,
            min_new_tokens=3,
            eos_token_id=[EOS, b],
        ),
    }


OPTION_NAMES = list(options([1, 2, 3], 10))


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_scores_match_generate(name):
    """process_scores on all of generate's steps at once (rows of different lengths) gives
    generate's processed scores exactly; stops() and GeneratedSequence end where generate
    ended."""
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    prompt_length = inputs["input_ids"].shape[1]
    opts = options(greedy_tokens(), prompt_length)[name]
    sequences, logits, scores = reference(target, inputs, max_new_tokens=N, **opts)
    setup = setup_for(target, inputs, max_new_tokens=N, **opts)
    n = sequences.shape[1] - prompt_length
    rows = [sequences[0, : prompt_length + t] for t in range(n)]
    SEEN_BATCH_IDS.clear()
    got = gen.process_scores(setup, rows, logits)
    assert got.dtype == torch.float32 and got.shape == scores.shape
    assert torch.equal(got, scores)
    if name == "prefix_allowed_tokens_fn":
        assert SEEN_BATCH_IDS == [0] * n
    # Stopping, after each emitted token, as generate decided.
    decisions = [gen.stops(setup, sequences[0, : prompt_length + t]) for t in range(1, n + 1)]
    assert decisions == [False] * (n - 1) + [True]
    seq = gen.GeneratedSequence(setup)
    assert [seq.append(tok) for tok in sequences[0, prompt_length:].tolist()] == decisions
    assert torch.equal(seq.ids(), sequences)


@pytest.mark.parametrize("vocab", [tm.VOCAB_SIZE, tm.VOCAB_SIZE + 3])
@pytest.mark.parametrize("name", OPTION_NAMES)
def test_tree_rows_equal_batch_one_pipeline(name, vocab):
    """Rows off generate's path (random tree paths after the prompt and a few emitted tokens,
    several of one length) equal generate's processor list called on each batch-1 row. An odd
    vocabulary size puts rows off the vector width (CPU kernels' scalar tails)."""
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    prompt = inputs["input_ids"][0]
    opts = options(greedy_tokens(), prompt.numel())[name]
    setup = setup_for(target, inputs, max_new_tokens=N, **opts)
    g = torch.Generator().manual_seed(3)
    emitted = torch.randint(0, tm.NUM_TEXT_TOKENS, (3,), generator=g)
    rows = []
    for depth in (0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 6):
        path = torch.randint(0, tm.NUM_TEXT_TOKENS, (depth,), generator=g)
        rows.append(torch.cat([prompt, emitted, path]))
    logits = torch.randn(len(rows), vocab, generator=g) * 3
    if name == "remove_invalid_values":
        logits[1, 5], logits[2, 7] = float("inf"), float("nan")
    SEEN_BATCH_IDS.clear()
    got = gen.process_scores(setup, rows, logits)
    expected = torch.cat(
        [setup.logits_processor(r[None], logits[i : i + 1].float()) for i, r in enumerate(rows)]
    )
    assert torch.equal(got, expected)
    if name == "prefix_allowed_tokens_fn":
        assert set(SEEN_BATCH_IDS) == {0}
    # Sequences as [1, L] tensors and as lists give the same.
    as_lists = [r.tolist() for r in rows]
    assert torch.equal(gen.process_scores(setup, as_lists, logits), expected)


def test_no_processor_is_plain_fp32_logits():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    setup = setup_for(target, inputs, max_new_tokens=4)
    assert len(setup.logits_processor) == 0
    logits = torch.randn(3, tm.VOCAB_SIZE).to(torch.bfloat16)
    rows = [inputs["input_ids"][0]] * 3
    assert torch.equal(gen.process_scores(setup, rows, logits), logits.float())
    with pytest.raises(ValueError, match="one row per sequence"):
        gen.process_scores(setup, rows[:2], logits)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_every_family(family):
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=2)
    opts = dict(repetition_penalty=1.3, no_repeat_ngram_size=2)
    sequences, logits, scores = reference(target, inputs, max_new_tokens=N, **opts)
    setup = setup_for(target, inputs, max_new_tokens=N, **opts)
    length = inputs["input_ids"].shape[1]
    rows = [sequences[0, : length + t] for t in range(N)]
    assert torch.equal(gen.process_scores(setup, rows, logits), scores)


# -------------------------------------------------------------------------------------------
# Length, special tokens, stopping
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_length_as_generate(family):
    target, _ = pair(family)
    inputs = tm.make_inputs(family, target, seed=1)
    length = inputs["input_ids"].shape[1]
    cases = [
        {},  # the stock default: 20 new tokens
        dict(max_new_tokens=7),
        dict(max_length=length + 5),
        dict(max_length=length + 9, max_new_tokens=3),  # max_new_tokens wins, as in generate
        dict(generation_config=GenerationConfig(max_new_tokens=4)),
    ]
    for case in cases:
        options = dict(case)
        config = options.pop("generation_config", None)
        if case:
            out = target.generate(**inputs, do_sample=False, **case)
            setup = setup_for(target, inputs, config, **options)
        else:  # both warn that the model-agnostic default max_length is used
            with pytest.warns(UserWarning, match="default `max_length`"):
                out = target.generate(**inputs, do_sample=False)
            with pytest.warns(UserWarning, match="default `max_length`"):
                setup = setup_for(target, inputs)
        assert setup.max_new_tokens == out.shape[1] - length, case
        assert setup.max_length == out.shape[1]
    # The model's own generation_config counts as generate counts it.
    saved = copy.deepcopy(target.generation_config)
    try:
        target.generation_config.max_new_tokens = 6
        out = target.generate(**inputs, do_sample=False)
        assert setup_for(target, inputs).max_new_tokens == out.shape[1] - length == 6
    finally:
        target.generation_config = saved
    # A budget the prompt already fills: generate's own error.
    with pytest.raises(ValueError, match="max_length"):
        target.generate(**inputs, max_length=length)
    with pytest.raises(ValueError, match="max_length"):
        setup_for(target, inputs, max_length=length)


def test_special_tokens():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    setup = setup_for(target, inputs, max_new_tokens=3)
    assert setup.eos_token_ids == {EOS} and setup.pad_token_id == tm.PAD_TOKEN_ID
    setup = setup_for(target, inputs, max_new_tokens=3, eos_token_id=[5, 6], pad_token_id=None)
    assert setup.eos_token_ids == {5, 6}
    assert setup.pad_token_id == 5  # pad unset by the call: the first EOS, as generate
    config = GenerationConfig(max_new_tokens=3, eos_token_id=9, bos_token_id=1)
    setup = setup_for(target, inputs, config)
    assert setup.eos_token_ids == {9} and setup.generation_config.bos_token_id == 1


def test_eos_stopping():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    tokens = greedy_tokens()
    stop = tokens[3]
    out = target.generate(**inputs, max_new_tokens=N, do_sample=False, eos_token_id=stop)
    length = inputs["input_ids"].shape[1]
    assert out.shape[1] - length == tokens.index(stop) + 1
    setup = setup_for(target, inputs, max_new_tokens=N, eos_token_id=stop)
    seq = gen.GeneratedSequence(setup)
    emitted = out[0, length:].tolist()
    assert [seq.append(t) for t in emitted] == [False] * (len(emitted) - 1) + [True]
    assert seq.new_tokens == emitted and len(seq) == out.shape[1]
    assert torch.equal(seq.extended([1, 2]), torch.cat([out[0], torch.tensor([1, 2])])[None])


class StopAfter(StoppingCriteria):
    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores, **kwargs):
        assert scores is None  # as generate passes without output_scores
        return input_ids[:, -2] == self.token


def test_user_stopping_criteria():
    """A user criterion (stop one token after a given token), through the slow path."""
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    tokens = greedy_tokens()
    criteria = StoppingCriteriaList([StopAfter(tokens[2])])
    out = target.generate(**inputs, max_new_tokens=N, do_sample=False, stopping_criteria=criteria)
    length = inputs["input_ids"].shape[1]
    assert out.shape[1] - length == 4
    setup = setup_for(target, inputs, max_new_tokens=N, stopping_criteria=criteria)
    assert not setup._fast_stop
    seq = gen.GeneratedSequence(setup)
    assert [seq.append(t) for t in out[0, length:].tolist()] == [False] * 3 + [True]
    # A user EOS criterion replaces generate's own (same type): its ids are the stop ids.
    criteria = StoppingCriteriaList([EosTokenCriteria(tokens[2])])
    out = target.generate(**inputs, max_new_tokens=N, do_sample=False, stopping_criteria=criteria)
    assert out.shape[1] - length == 3
    setup = setup_for(target, inputs, max_new_tokens=N, stopping_criteria=criteria)
    assert setup._fast_stop and setup.stop_token_ids == {tokens[2]}
    assert setup.eos_token_ids == {EOS}
    seq = gen.GeneratedSequence(setup)
    assert [seq.append(t) for t in out[0, length:].tolist()] == [False] * 2 + [True]


def test_fast_stop_equals_criteria():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    setup = setup_for(target, inputs, max_new_tokens=5, eos_token_id=[4, 9])
    assert setup._fast_stop
    prompt = inputs["input_ids"][0]
    g = torch.Generator().manual_seed(0)
    for n in range(1, 8):
        for _ in range(5):
            seq = torch.cat([prompt, torch.randint(0, 12, (n,), generator=g)])
            slow = bool(setup.stopping_criteria(seq[None], None)[0])
            assert gen.stops(setup, seq) == slow
            assert gen.stops(setup, seq.tolist()) == slow


def test_max_time():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    # half a second: the first append must come before it, also on a loaded machine
    setup = setup_for(target, inputs, max_new_tokens=N, max_time=0.5)
    seq = gen.GeneratedSequence(setup)
    assert not seq.append(1)
    time.sleep(0.6)
    assert seq.append(2)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"<{i}>": i for i in range(tm.VOCAB_SIZE)}
    vocab["abcdef"] = tm.VOCAB_SIZE  # StopStringCriteria tokenizes this probe string
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<0>"))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_stop_strings():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    tokens = greedy_tokens()
    stop = f"<{tokens[2]}><{tokens[3]}>"
    tokenizer = _tokenizer()
    out = target.generate(
        **inputs, max_new_tokens=N, do_sample=False, stop_strings=stop, tokenizer=tokenizer
    )
    length = inputs["input_ids"].shape[1]
    emitted = out[0, length:].tolist()
    assert len(emitted) == 4
    setup = setup_for(target, inputs, max_new_tokens=N, stop_strings=stop, tokenizer=tokenizer)
    assert setup.tokenizer is tokenizer
    seq = gen.GeneratedSequence(setup)
    assert [seq.append(t) for t in emitted] == [False] * 3 + [True]
    with pytest.raises(ValueError, match="tokenizer"):  # generate's own error
        setup_for(target, inputs, max_new_tokens=N, stop_strings=stop)


# -------------------------------------------------------------------------------------------
# Classification: nothing silently ignored
# -------------------------------------------------------------------------------------------
# Every GenerationConfig field the library honours -> the test that covers it.
HONOURED_FIELD_TESTS = {
    "max_length": "test_length_as_generate",
    "max_new_tokens": "test_length_as_generate",
    "max_time": "test_max_time",
    "stop_strings": "test_stop_strings",
    "eos_token_id": "test_eos_stopping",
    "pad_token_id": "test_special_tokens",
    "bos_token_id": "test_special_tokens",
    "_from_model_config": "test_fields_classified",
    "transformers_version": "test_fields_classified",
    "_commit_hash": "test_fields_classified",
}
for _name in (
    "min_length min_new_tokens do_sample temperature top_k top_p min_p top_h typical_p "
    "epsilon_cutoff eta_cutoff repetition_penalty encoder_repetition_penalty no_repeat_ngram_size "
    "encoder_no_repeat_ngram_size bad_words_ids sequence_bias suppress_tokens "
    "begin_suppress_tokens forced_bos_token_id forced_eos_token_id "
    "exponential_decay_length_penalty remove_invalid_values renormalize_logits"
).split():
    HONOURED_FIELD_TESTS[_name] = "test_scores_match_generate"

# Fields generate itself ignores in greedy / sampling batch-1 calls, or that only tune its own
# loop: a non-default value must change nothing (test_no_effect_fields_change_nothing).
NO_EFFECT_EXAMPLES = {
    "decoder_start_token_id": 3,
    "early_stopping": True,
    "length_penalty": 2.0,
    "diversity_penalty": 0.5,
    "low_memory": True,
    "num_assistant_tokens": 5,
    "num_assistant_tokens_schedule": "heuristic",
    "assistant_confidence_threshold": 0.9,
    "max_matching_ngram_size": 3,
    "assistant_lookbehind": 3,
    "target_lookbehind": 3,
    "assistant_ensemble_weight": 0.5,
    "speculation_type": "dflash",
    "use_cache": False,
    "cache_config": {"x": 1},
    "max_cache_len": 64,
    "compile_config": None,  # a CompileConfig object; None is its default
    "disable_compile": True,
    "prefill_chunk_size": 16,
    "continuous_batching_config": None,  # deprecated (warns); only read with 'paged'
}
for _name in NO_EFFECT_EXAMPLES:
    HONOURED_FIELD_TESTS[_name] = "test_no_effect_fields_change_nothing"

# Every refused GenerationConfig field -> a value that must be refused.
REFUSED_FIELD_EXAMPLES = {
    "num_beams": 2,
    "num_beam_groups": 2,
    "num_return_sequences": 2,
    "penalty_alpha": 0.6,
    "dola_layers": "high",
    "constraints": ["<a constraint>"],
    "force_words_ids": [[5]],
    "use_mtp": True,
    "prompt_lookup_num_tokens": 3,
    "assistant_early_exit": 1,
    "is_assistant": True,
    "guidance_scale": 1.5,
    "watermarking_config": WatermarkingConfig(),
    "token_healing": True,
    "cache_implementation": "paged",
    "return_dict_in_generate": True,
    "output_scores": True,
    "output_logits": True,
    "output_attentions": True,
    "output_hidden_states": True,
}

# Options a refused example needs so that generate itself accepts the call.
REFUSED_FIELD_CONTEXT = {"num_return_sequences": {"do_sample": True}}


def _generate_arguments() -> set[str]:
    """generate's keywords: its signature, the kwargs it and its first step read, and the
    deprecated names its decorators map."""
    names = set(inspect.signature(GenerationMixin.generate).parameters) - {"self", "kwargs"}
    source = inspect.getsource(GenerationMixin.generate) + inspect.getsource(
        GenerationMixin._extract_generation_mode_kwargs
    )
    names |= set(re.findall(r"\bkwargs\.(?:pop|get)\(\"(\w+)\"", source))
    names |= set(re.findall(r"deprecate_kwarg\(\"(\w+)\"", source))
    names |= set(re.findall(r"new_name=\"(\w+)\"", source))
    return names


HONOURED_ARGUMENT_TESTS = {
    "inputs": "test_inputs_argument",
    "input_ids": "test_inputs_argument",
    "generation_config": "test_length_as_generate",
    "logits_processor": "test_scores_match_generate",
    "prefix_allowed_tokens_fn": "test_scores_match_generate",
    "stopping_criteria": "test_user_stopping_criteria",
    "streamer": "test_streamer_and_generator_pass_through",
    "tokenizer": "test_stop_strings",
    "trust_remote_code": "test_no_effect_fields_change_nothing",
    "synced_gpus": "test_synced_gpus",
    "max_length": "test_length_as_generate",
    "min_length": "test_scores_match_generate",
    "cache_implementation": "test_refused_fields",
}


def _refused_argument_examples():
    from transformers import DynamicCache

    _, draft = pair()
    return {
        "assistant_model": draft,
        "assistant_tokenizer": _tokenizer(),
        "custom_generate": "someone/custom-generate",
        "negative_prompt_ids": torch.tensor([[1, 2]]),
        "negative_prompt_attention_mask": torch.tensor([[1, 1]]),
        "cache": DynamicCache(),
        "past_key_values": DynamicCache(),
        "cache_params": DynamicCache(),
        "inputs_embeds": torch.zeros(1, 3, 8),
    }


def test_fields_classified():
    """Every GenerationConfig field is honoured (test named) or refused, in the library and
    here; a field a later transformers adds fails until it is classified."""
    fields = set(vars(GenerationConfig()))
    classified = set(gen.HONOURED_FIELDS) | set(gen.REFUSED_FIELDS)
    assert fields <= classified, fields - classified
    assert classified - fields <= {"_commit_hash"}  # fields of other supported versions
    assert not set(gen.HONOURED_FIELDS) & set(gen.REFUSED_FIELDS)
    assert set(HONOURED_FIELD_TESTS) == set(gen.HONOURED_FIELDS)
    assert set(REFUSED_FIELD_EXAMPLES) == set(gen.REFUSED_FIELDS)
    for name, test in HONOURED_FIELD_TESTS.items():
        assert callable(globals().get(test)), (name, test)
    covered = {key for opts in options([1, 2, 3], 10).values() for key in opts}
    for name, test in HONOURED_FIELD_TESTS.items():
        if test == "test_scores_match_generate":
            assert name in covered, name


def test_arguments_classified():
    arguments = _generate_arguments()
    known = set(gen.HONOURED_ARGUMENTS) | set(gen.REFUSED_ARGUMENTS)
    assert arguments <= known | set(gen.HONOURED_FIELDS) | set(gen.REFUSED_FIELDS), (
        arguments - known
    )
    assert set(HONOURED_ARGUMENT_TESTS) == set(gen.HONOURED_ARGUMENTS)
    assert set(_refused_argument_examples()) == set(gen.REFUSED_ARGUMENTS)
    for name, test in HONOURED_ARGUMENT_TESTS.items():
        assert callable(globals().get(test)), (name, test)


def _no_forward(model):
    def hook(*_):
        raise AssertionError("resolve ran the model")

    return model.register_forward_pre_hook(hook)


@pytest.mark.parametrize("name", sorted(REFUSED_FIELD_EXAMPLES))
def test_refused_fields(name):
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    handle = _no_forward(target)
    try:
        context = REFUSED_FIELD_CONTEXT.get(name, {})
        example = dict(context, **{name: REFUSED_FIELD_EXAMPLES[name]})
        with pytest.raises(NotImplementedError, match=rf"option {name}=") as err:
            setup_for(target, inputs, max_new_tokens=3, **example)
        assert "\n" not in str(err.value)
        # Also from the model's generation_config (a shipped config), and through a
        # generation_config argument.
        saved = copy.deepcopy(target.generation_config)
        try:
            for key, value in example.items():
                setattr(target.generation_config, key, value)
            with pytest.raises(NotImplementedError, match=rf"option {name}="):
                setup_for(target, inputs, max_new_tokens=3)
        finally:
            target.generation_config = saved
        # The neutral value is accepted.
        is_neutral, neutral, _ = gen.REFUSED_FIELDS[name]
        assert is_neutral(neutral) and is_neutral(None)
        setup_for(target, inputs, max_new_tokens=3, **{name: neutral})
    finally:
        handle.remove()


@pytest.mark.parametrize("name", sorted(gen.REFUSED_ARGUMENTS))
def test_refused_arguments(name):
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    handle = _no_forward(target)
    try:
        value = _refused_argument_examples()[name]
        with pytest.raises(NotImplementedError, match=rf"option {name}=") as err:
            setup_for(target, inputs, max_new_tokens=3, **{name: value})
        assert "\n" not in str(err.value)
    finally:
        handle.remove()


def test_synced_gpus():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    setup_for(target, inputs, max_new_tokens=3, synced_gpus=False)
    with pytest.raises(NotImplementedError, match="option synced_gpus="):
        setup_for(target, inputs, max_new_tokens=3, synced_gpus=True)


def test_neutral_values_accepted():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    setup = setup_for(
        target,
        inputs,
        max_new_tokens=3,
        min_new_tokens=0,
        suppress_tokens=[],
        num_beams=1,
        num_return_sequences=1,
        guidance_scale=1.0,
        output_scores=False,
        return_dict_in_generate=False,
        penalty_alpha=0.0,
        do_sample=False,
    )
    assert setup.max_new_tokens == 3 and not setup.do_sample


def _pipeline(setup):
    return (
        [type(p) for p in setup.logits_processor],
        [type(c) for c in setup.stopping_criteria],
        setup.max_new_tokens,
        setup.do_sample,
        setup.eos_token_ids,
    )


@pytest.mark.parametrize("name", sorted(NO_EFFECT_EXAMPLES))
def test_no_effect_fields_change_nothing(name):
    """Fields generate ignores in greedy / sampling batch-1 calls (beam, assisted, encoder-
    decoder options) or that only tune its own cache / compilation: accepted, same pipeline."""
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    base = setup_for(target, inputs, max_new_tokens=3, repetition_penalty=1.1)
    value = NO_EFFECT_EXAMPLES[name]
    extra = {name: value} if value is not None else {}
    if name == "use_cache":
        extra["trust_remote_code"] = True  # also no effect without custom_generate
    setup = setup_for(target, inputs, max_new_tokens=3, repetition_penalty=1.1, **extra)
    assert _pipeline(setup) == _pipeline(base)


def test_unknown_field_refused(monkeypatch):
    """A field this module does not know (as one a later transformers adds) is refused unless
    it holds its default."""
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    honoured = dict(gen.HONOURED_FIELDS)
    del honoured["max_time"]
    monkeypatch.setattr(gen, "HONOURED_FIELDS", honoured)
    setup_for(target, inputs, max_new_tokens=3)
    with pytest.raises(NotImplementedError, match="option max_time=.*does not know"):
        setup_for(target, inputs, max_new_tokens=3, max_time=5.0)


def test_typos_raise_as_generate():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    with pytest.raises(ValueError, match="max_new_token"):
        target.generate(**inputs, max_new_token=3)
    with pytest.raises(ValueError, match="max_new_token"):
        setup_for(target, inputs, max_new_token=3)


def test_inputs_argument():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    input_ids, rest = split(inputs)
    setup = gen.resolve(target, None, None, dict(rest, inputs=input_ids, max_new_tokens=2))
    assert torch.equal(setup.input_ids, input_ids)
    assert set(setup.model_inputs) == set(rest)
    with pytest.raises(ValueError, match="input_ids"):
        gen.resolve(target, input_ids, None, dict(rest, inputs=input_ids))
    batch = {k: torch.cat([v, v]) if k != "pixel_values_videos" else v for k, v in inputs.items()}
    with pytest.raises(NotImplementedError, match="batch size 2"):
        setup_for(target, batch, max_new_tokens=2)
    padded = dict(inputs, attention_mask=inputs["attention_mask"].clone())
    padded["attention_mask"][0, 0] = 0
    with pytest.raises(NotImplementedError, match="padded prompts"):
        setup_for(target, padded, max_new_tokens=2)


def test_streamer_and_generator_pass_through():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    streamer, generator = object(), torch.Generator().manual_seed(0)
    setup = setup_for(target, inputs, max_new_tokens=2, streamer=streamer, generator=generator)
    assert setup.streamer is streamer and setup.generator is generator
    assert setup_for(target, inputs, max_new_tokens=2).generator is None
    with pytest.raises(TypeError, match="generator"):
        setup_for(target, inputs, max_new_tokens=2, generator=0)


@pytest.mark.parametrize(
    "shipped", [QWEN2_5_VL_SHIPPED, QWEN3_VL_8B_SHIPPED], ids=["qwen2_5_vl", "qwen3_vl_8b"]
)
def test_shipped_generation_configs(shipped):
    """Shipped sampling configs, set on the model as from_pretrained sets them, resolve."""
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    saved = copy.deepcopy(target.generation_config)
    try:
        for key, value in shipped.items():
            setattr(target.generation_config, key, value)
        setup = setup_for(target, inputs, max_new_tokens=4)
        assert setup.do_sample
        names = [type(p).__name__ for p in setup.logits_processor]
        expected = ["TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"]
        if "repetition_penalty" in shipped:
            expected.insert(0, "RepetitionPenaltyLogitsProcessor")
        assert names == expected
        # A greedy call over the shipped config works too (as generate: do_sample=False).
        assert not setup_for(target, inputs, max_new_tokens=4, do_sample=False).do_sample
    finally:
        target.generation_config = saved


def test_generated_sequence_grows():
    target, _ = pair()
    inputs = tm.make_inputs(FAMILY, target, seed=1)
    setup = setup_for(target, inputs, max_new_tokens=2)
    seq = gen.GeneratedSequence(setup)
    tokens = [3, 4, 5, 6, 7]
    assert [seq.append(t) for t in tokens] == [False, True, True, True, True]
    assert seq.ids()[0, -5:].tolist() == tokens and seq.new_tokens == tokens
    assert torch.equal(seq.ids()[:, : setup.prompt_length], setup.input_ids)
