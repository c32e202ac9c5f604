"""lmms-eval's generation requests as SpecVLM's inputs, and what the model logs (no lmms-eval
import: tested in the main suite)."""

from __future__ import annotations

import os

DEFAULT_MAX_NEW_TOKENS = 256
_GEN_KNOWN = {"until", "max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "num_beams"}


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def sampling_of(gen_kwargs: dict) -> dict | None:
    """lmms-eval's generation options as ``generate``'s sampling options (None: greedy);
    ValueError for an option SpecVLM cannot honour."""
    unknown = sorted(set(gen_kwargs) - _GEN_KNOWN)
    if unknown:
        raise ValueError(f"specvlm: generation options not supported: {', '.join(unknown)}")
    if int(gen_kwargs.get("num_beams", 1) or 1) != 1:
        raise ValueError("specvlm: beam search (num_beams > 1) is not speculative decoding")
    temperature = float(gen_kwargs.get("temperature", 0) or 0)
    if not _flag(gen_kwargs.get("do_sample", False)) or temperature == 0:
        return None
    options = {"do_sample": True, "temperature": temperature}
    if gen_kwargs.get("top_p") is not None:
        options["top_p"] = float(gen_kwargs["top_p"])
    if gen_kwargs.get("top_k") is not None:
        options["top_k"] = int(gen_kwargs["top_k"])
    return options


def cut_at_stops(text: str, until) -> str:
    """``text`` up to the first of the stop strings ``until`` (a string or a list)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


def video_of(visuals, where: str) -> str:
    """The one video file of a request."""
    visuals = visuals if isinstance(visuals, (list, tuple)) else [visuals]
    paths = [v for v in visuals if isinstance(v, (str, os.PathLike))]
    if len(paths) != 1 or len(visuals) != 1:
        kinds = ", ".join(type(v).__name__ for v in visuals) or "nothing"
        raise ValueError(f"specvlm: {where} must give one video file, got {kinds}")
    return os.fspath(paths[0])


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def describe(numbers: dict) -> str:
    """A record's or a summary's numbers in one line."""
    same = numbers["identical"]
    if isinstance(same, int) and not isinstance(same, bool):  # a summary: a count
        same = f"{same}/{numbers['samples']}"
    return (
        f"identical {same}, tau {_number(numbers['tau'], '.2f')}, decode "
        f"{_number(numbers['decode_speedup'], '.2f')}x, end to end "
        f"{_number(numbers['e2e_speedup'], '.2f')}x"
    )
