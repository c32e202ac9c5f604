"""End-to-end comparison of generation methods on the same inputs (used by ``specvlm bench``).

Methods:

* ``autoregressive``: the target's own ``generate`` (the reference output and timing).
* ``autoregressive_compiled``: the same with transformers' static cache and its decode forward
  compiled by ``torch.compile`` (the strongest stock baseline, :mod:`specvlm.tools.compiled`);
  warmed up once per shape, untimed (``warmup_s``), so its compile is not in its times.
* ``naive_sd``: SpecVLM's loop with the draft seeing every video token (``drop_rate=0``), and
  without scoring the video (which only pruning needs).
* ``assisted_generation``: transformers' ``generate(assistant_model=draft)``; upstream support
  for vision-language drafts varies, so a failure is recorded with its message, never dropped.
* ``specvlm``: two-stage verifier-guided pruning; ``dynamic``: the same with a dynamic tree of
  the same verification budget (``tree="dynamic"``, :mod:`specvlm.dynamic_tree`); ``auto``:
  SpecVLM with its automatic policy
  (drop rate, tree and whether to speculate chosen per call; one decoder per pair for the whole
  process, so it learns from every call, as a user's would); ``attention``, ``uniform``,
  ``random``: the other selectors at the same budget (ablations).

Greedy by default; with ``sampling`` (``do_sample=True`` and its options) every method samples
with the same options and seed (``torch.manual_seed(seed)`` before the target's ``generate``, a
seeded ``generator=`` for SpecVLM's): outputs are then samples of the target's distribution and
are not compared.

Each record: ``method``, ``mode`` (``"greedy"`` or ``"sample"``), ``mean_accepted_length``
(None where the method does not report it), ``new_tokens``, ``decode_s``,
``decode_tokens_per_s``, ``e2e_s``, ``ttft_s``, ``peak_memory_bytes``, ``decode_speedup`` /
``e2e_speedup`` (vs ``autoregressive`` on the same inputs, per token),
``decode_speedup_vs_compiled`` / ``e2e_speedup_vs_compiled`` (vs ``autoregressive_compiled``;
None where it did not run), ``identical``
(token-for-token equal to ``autoregressive``; None when sampling or on error), ``error``,
``runs`` (every repeat's times: ``decode_s``, ``e2e_s``, ``ttft_s``, ``new_tokens``), plus the
caller's sweep parameters; for the SpecVLM methods ``captured`` (``last_stats.captured``);
for ``autoregressive_compiled``, ``warmup_s``; for ``auto``, what its policy chose
(``speculated``, ``drop_rate``, ``tree_size``, ``tree_depth``, ``fallback_step``).
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from dataclasses import replace

import torch

import specvlm
from specvlm.devices import cuda_devices
from specvlm.dynamic_tree import DynamicTree
from specvlm.tools.common import METHODS, per_token_speedup
from specvlm.tools.compiled import compiled_generate_kwargs, warm_up
from specvlm.tools.timing import Timing, fastest, timed
from specvlm.trees import Tree, default_tree

__all__ = ["METHODS", "compare", "run_method"]

_SELECTOR = {
    "specvlm": "two_stage",
    "dynamic": "two_stage",
    "overlap": "two_stage",
    "attention": "attention",
    "uniform": "uniform",
    "random": "random",
}


_AUTO: dict[tuple, specvlm.SpeculativeDecoder] = {}


def auto_decoder(target, draft, *, capture="auto") -> specvlm.SpeculativeDecoder:
    """The ``auto`` method's decoder for this pair (and ``capture``): one per pair for the
    process (the policy's measured costs and observed acceptance carry over from call to
    call)."""
    key = (id(target), id(draft), capture)
    sd = _AUTO.get(key)
    if sd is None or sd.target is not target or sd.draft is not draft:
        sd = _AUTO[key] = specvlm.accelerate((target, draft), capture=capture, overlap=False)
    return sd


def naive_decoder(
    target, draft, *, tree=None, seed: int = 0, capture="auto"
) -> specvlm.SpeculativeDecoder:
    """Naive speculative decoding: SpecVLM's loop with the draft on every video token (drop
    rate 0), without scoring the video (only pruning needs the scores)."""
    sd = specvlm.accelerate(
        (target, draft), drop_rate=0.0, seed=seed, tree=tree, capture=capture, overlap=False
    )
    sd.settings = replace(sd.settings, score_video=False)
    return sd


def _peak_reset(devices) -> None:
    for dev in devices:
        torch.cuda.reset_peak_memory_stats(dev)


def _peak(devices) -> int | None:
    if not devices:
        return None
    return max(torch.cuda.max_memory_allocated(dev) for dev in devices)


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


@contextmanager
def _quiet_assistant():
    """Transformers' own assisted generation (``AssistedCandidateGenerator``) calls the
    assistant's ``generate`` with a ``generation_config`` *and* ``min_new_tokens`` /
    ``max_new_tokens``, and ``generate`` then warns that this is deprecated (once per process,
    in the middle of the bench's progress bar). Nothing a caller can change: the message is
    dropped for the duration of the call."""
    log = logging.getLogger("transformers.generation.utils")
    drop = _DropMessage("Passing `generation_config` together with generation-related")
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


def spec_decoder(
    method: str,
    target,
    draft,
    *,
    drop_rate: float = 0.9,
    tree=None,
    random_seed: int = 0,
    capture="auto",
) -> specvlm.SpeculativeDecoder:
    """The SpecVLM decoder a speculative ``method`` runs (``capture`` goes to every one, so the
    methods compare on equal terms)."""
    if method == "auto":
        return auto_decoder(target, draft, capture=capture)
    if method == "naive_sd":
        return naive_decoder(target, draft, tree=tree, seed=random_seed, capture=capture)
    if method == "dynamic":  # the same verification budget as the sweep's static tree
        tree = DynamicTree(budget=_as_size(tree))
    return specvlm.accelerate(
        (target, draft),
        drop_rate=drop_rate,
        seed=random_seed,
        selector=_SELECTOR[method],
        tree=tree,
        capture=capture,
        overlap=method == "overlap",  # the other methods are the sequential loop
    )


def _as_size(tree) -> int:
    """The nodes of a static tree given as a Tree, rank paths or None (the default tree)."""
    if tree is None:
        return default_tree().size
    return tree.size if isinstance(tree, Tree) else len(tree)


def _stats_fields(method: str, stats) -> dict:
    """What a SpecVLM method's record takes from its ``last_stats``."""
    fields = {
        "mean_accepted_length": stats.mean_accepted_length if stats.speculated else None,
        "video_tokens": stats.video_tokens,
        "kept_video_tokens": stats.kept_video_tokens,
        "captured": stats.captured,
    }
    if method == "overlap":
        fields.update(
            lookahead_used=stats.lookahead_used,
            overlap_hidden=stats.overlap_hidden,
            overlapped=stats.overlapped,
        )
    if method == "auto":
        fields.update(
            speculated=stats.speculated,
            chosen_drop_rate=stats.drop_rate,
            chosen_tree_size=stats.tree_size,
            chosen_tree_depth=stats.tree_depth,
            fallback_step=stats.fallback_step,
        )
    return fields


def _generator(inputs: dict, seed: int) -> dict:
    """SpecVLM's sampling RNG, seeded, on the prompt's device."""
    return {"generator": torch.Generator(inputs["input_ids"].device).manual_seed(seed)}


def _error_record(record: dict, err: Exception) -> dict:
    return dict(
        record,
        error=f"{type(err).__name__}: {err}",
        new_tokens=0,
        decode_s=None,
        decode_tokens_per_s=None,
        e2e_s=None,
        ttft_s=None,
        peak_memory_bytes=None,
    )


def run_method(
    method: str,
    target,
    draft,
    inputs: dict,
    *,
    max_new_tokens: int,
    drop_rate: float = 0.9,
    tree=None,
    generate_kwargs: dict | None = None,
    random_seed: int = 0,
    sampling: dict | None = None,
    seed: int = 0,
    capture="auto",
) -> tuple[torch.Tensor | None, dict]:
    """Run one method once; return ``(output ids or None on error, record)``.
    ``generate_kwargs`` (e.g. ``eos_token_id``) go to every method's ``generate``;
    ``random_seed`` seeds the ``random`` selector; ``sampling`` (``do_sample=True`` and its
    options; None: greedy) goes to every method, each seeded with ``seed``; ``capture`` goes to
    every SpecVLM decoder (``accelerate(capture=)``). ``autoregressive_compiled`` is warmed up
    first (once per shape, untimed): its record's ``warmup_s`` is that call's seconds (0.0 when
    the shape was warm already)."""
    gen = dict(generate_kwargs or {}, max_new_tokens=max_new_tokens)
    gen.update(sampling or {"do_sample": False})
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    devices = cuda_devices(target, draft)
    record = {
        "method": method,
        "mode": "sample" if sampling else "greedy",
        "mean_accepted_length": None,
        "error": None,
    }

    def seeded_target_generate(streamer, **kw):
        if sampling:
            torch.manual_seed(seed)
        return target.generate(**inputs, streamer=streamer, **gen, **kw)

    try:
        with torch.no_grad():
            if method == "autoregressive_compiled":
                record["warmup_s"] = warm_up(target, inputs, gen)
            _peak_reset(devices)
            if method == "autoregressive":
                out, t = timed(seeded_target_generate, devices)
            elif method == "autoregressive_compiled":
                out, t = timed(
                    lambda s: seeded_target_generate(s, **compiled_generate_kwargs()), devices
                )
            elif method == "assisted_generation":
                with _quiet_assistant():
                    out, t = timed(
                        lambda s: seeded_target_generate(s, assistant_model=draft), devices
                    )
            else:
                sd = spec_decoder(
                    method, target, draft, drop_rate=drop_rate, tree=tree,
                    random_seed=random_seed, capture=capture,
                )  # fmt: skip
                extra = _generator(inputs, seed) if sampling else {}
                out, t = timed(lambda s: sd.generate(**inputs, streamer=s, **gen, **extra), devices)
                record.update(_stats_fields(method, sd.last_stats))
    except Exception as err:  # recorded, not raised: a broken baseline stays in the results
        return None, _error_record(record, err)
    record.update(
        new_tokens=t.new_tokens,
        decode_s=t.decode_s,
        decode_tokens_per_s=t.decode_tokens_per_s,
        e2e_s=t.e2e_s,
        ttft_s=t.ttft_s,
        peak_memory_bytes=_peak(devices),
    )
    return out, record


def compare(
    target,
    draft,
    inputs: dict,
    methods=METHODS,
    *,
    max_new_tokens: int,
    drop_rate: float = 0.9,
    tree=None,
    generate_kwargs: dict | None = None,
    repeats: int = 1,
    random_seed: int = 0,
    sampling: dict | None = None,
    seed: int = 0,
    capture="auto",
    **params,
) -> list[dict]:
    """Run ``methods`` on ``inputs``; ``autoregressive`` is always run first (the reference).

    With ``repeats > 1`` every method runs that many times, the methods alternating (so the
    drifts of a shared machine hit all of them), and each time (decode, end to end, first
    token) is the fastest of its runs; every run's times are kept in ``runs``; ``identical``
    must hold for every run. ``random_seed`` seeds the ``random`` selector (the same subset in
    every repeat); ``sampling`` and ``seed``: see :func:`run_method` (every repeat draws the
    same sample); ``capture``: every SpecVLM decoder's ``capture=``. Returns one record per
    method with speedups (time per token, so runs of different lengths compare) against
    ``autoregressive`` and, where it ran, ``autoregressive_compiled`` (``*_vs_compiled``), and
    ``identical`` filled in, and ``params`` (sweep parameters such as ``frames``) copied into
    every record."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    order = ["autoregressive"] + [m for m in methods if m != "autoregressive"]
    best: dict[str, dict] = {}
    runs: dict[str, list[dict]] = {m: [] for m in order}
    identical: dict[str, bool | None] = {}
    ref_out = None
    for _ in range(repeats):
        for method in order:
            out, rec = run_method(
                method,
                target,
                draft,
                inputs,
                max_new_tokens=max_new_tokens,
                drop_rate=drop_rate,
                tree=tree,
                random_seed=random_seed,
                generate_kwargs=generate_kwargs,
                sampling=sampling,
                seed=seed,
                capture=capture,
            )
            if method == "autoregressive" and ref_out is None:
                ref_out = out
            same = None if out is None or ref_out is None else out.tolist() == ref_out.tolist()
            prev = identical.get(method, True)
            identical[method] = None if same is None or prev is None else prev and same
            best[method] = rec if method not in best else _faster(best[method], rec)
            runs[method].append({k: rec.get(k) for k in RUN_KEYS})
    records = []
    for method in order:
        rec = dict(best[method], identical=None if sampling else identical[method])
        rec["runs"] = runs[method]
        rec.update(params, drop_rate=drop_rate if method != "naive_sd" else 0.0)
        if method == "auto":  # what its policy chose (the last run's), not the sweep's
            rec["drop_rate"] = rec.get("chosen_drop_rate", drop_rate)
        records.append(rec)
    add_speedups(records)
    return records


def add_speedups(records: list[dict], first_tokens: int = 1) -> None:
    """Fill in every record's speedups, per token, against both baselines:
    ``decode_speedup`` / ``e2e_speedup`` against ``autoregressive`` (eager ``generate``, what
    most users run) and ``decode_speedup_vs_compiled`` / ``e2e_speedup_vs_compiled`` against
    ``autoregressive_compiled`` (None where that baseline did not run or failed)."""
    by_method = {r["method"]: r for r in records}
    eager = by_method.get("autoregressive", {})
    compiled = by_method.get("autoregressive_compiled", {})
    for rec in records:
        rec["decode_speedup"] = decode_speedup(eager, rec, first_tokens)
        rec["e2e_speedup"] = e2e_speedup(eager, rec)
        rec["decode_speedup_vs_compiled"] = decode_speedup(compiled, rec, first_tokens)
        rec["e2e_speedup_vs_compiled"] = e2e_speedup(compiled, rec)


RUN_KEYS = ("new_tokens", "decode_s", "e2e_s", "ttft_s")


def decode_speedup(ref: dict, rec: dict, first_tokens: int = 1) -> float | None:
    """Decode time per token after the first of ``ref`` over that of ``rec`` (``first_tokens``:
    how many first tokens, one per input, the decode times leave out)."""
    return per_token_speedup(
        ref.get("decode_s"),
        (ref.get("new_tokens") or 0) - first_tokens,
        rec.get("decode_s"),
        (rec.get("new_tokens") or 0) - first_tokens,
    )


def e2e_speedup(ref: dict, rec: dict) -> float | None:
    """End-to-end time per new token of ``ref`` over that of ``rec``."""
    return per_token_speedup(
        ref.get("e2e_s"), ref.get("new_tokens") or 0, rec.get("e2e_s"), rec.get("new_tokens") or 0
    )


def _faster(a: dict, b: dict) -> dict:
    """Two runs of one method merged: the shortest of each time; an error in either is kept."""
    if a["error"] is not None:
        return a
    if b["error"] is not None:
        return b
    keys = [f.name for f in dataclasses.fields(Timing)]
    best = fastest([Timing(**{k: r[k] for k in keys}) for r in (a, b)])
    return dict(a, **dataclasses.asdict(best))
