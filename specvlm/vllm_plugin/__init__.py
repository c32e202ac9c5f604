"""SpecVLM inside vLLM: the target served by vLLM, a pruned-video draft proposing for it.

One call gives the engine arguments (``docs/serving.md`` has the whole story)::

    from vllm import LLM
    from specvlm.vllm_plugin import engine_args

    llm = LLM(TARGET_DIR, **engine_args(draft=DRAFT_DIR, num_speculative_tokens=4))

and ``eval "vllm serve TARGET_DIR $(specvlm vllm-args --draft DRAFT_DIR)"`` serves the same
(the command prints the flags, shell-quoted).

* :mod:`~specvlm.vllm_plugin.proposer`: the ``custom_class`` proposer: per request, the draft
  (a transformers model of the target's family, with its own cache) prefills the prompt with the
  video tokens that verifier-guided pruning keeps, then proposes a chain each step; vLLM's own
  verification (and rejection sampler) keeps the output the target's.
* :mod:`~specvlm.vllm_plugin.scoring`: the target's text-to-video attention, measured inside
  vLLM's prefill by wrapping each decoder attention layer's ``impl.forward``.
* :mod:`~specvlm.vllm_plugin.worker`: the ``--worker-cls`` seam: gives the proposer the model
  runner (request ids, video inputs, the step's scheduled tokens) and frees the draft state of
  finished or aborted requests.
* :mod:`~specvlm.vllm_plugin.batched`: the persistent batched draft cache (a slot per request)
  and the batched chain drafting over it.
* :mod:`~specvlm.vllm_plugin.compat`: the vLLM versions this was written against; any other
  version is refused in one line before the engine starts; the families not drafted for.
* :mod:`~specvlm.vllm_plugin.models`: the package's ``vllm.general_plugins`` entry point, which
  registers two LLaVA-OneVision architectures (:mod:`~specvlm.vllm_plugin.llava_model`, and the
  embedded micro pair's, :mod:`specvlm.micro.vllm_model`).
* :mod:`~specvlm.vllm_plugin.server`: the process ``specvlm serve``
  (:mod:`specvlm.tools.serve`) becomes: vLLM's OpenAI-compatible API server, with the media
  packages that cannot load hidden first.

Nothing here imports vLLM at import time of this package: only the engine imports the modules
above, by name.
"""

from __future__ import annotations

import json

PROPOSER = "specvlm.vllm_plugin.proposer.SpecVLMProposer"
WORKER = "specvlm.vllm_plugin.worker.SpecVLMWorker"
CONFIG_KEY = "specvlm"  # vLLM's additional_config[CONFIG_KEY]: the plugin's own settings


def engine_args(
    draft: str,
    *,
    num_speculative_tokens: int = 4,
    drop_rate: float = 0.9,
    mass: float = 0.4,
    selector: str = "two_stage",
    draft_sampled: bool = False,
) -> dict:
    """The ``vllm.LLM`` / ``EngineArgs`` keyword arguments that serve the model with SpecVLM.

    ``draft``: a transformers checkpoint (directory or hub id) of the target's family, with the
    target's vocabulary (padding rows aside); ``num_speculative_tokens``: the chain length vLLM
    verifies each step; ``drop_rate``, ``mass``, ``selector``: the pruning, as in
    :func:`specvlm.accelerate`. ``draft_sampled``: also draft sampled requests (default: only
    greedy ones; sampled requests decode with the target alone). vLLM then verifies them with
    its rejection sampler; refused on vLLM's CPU backend, whose rejection sampling is biased
    (``docs/serving.md``), and not yet checked on a GPU by this project's tests."""
    if not isinstance(draft, str) or not draft:
        raise ValueError(f"draft must be a checkpoint path or hub id, got {draft!r}")
    if (
        isinstance(num_speculative_tokens, bool)
        or not isinstance(num_speculative_tokens, int)
        or num_speculative_tokens < 1
    ):
        raise ValueError(
            f"num_speculative_tokens must be an int >= 1, got {num_speculative_tokens!r}"
        )
    settings = validated_settings(
        drop_rate=drop_rate, mass=mass, selector=selector, draft_sampled=draft_sampled
    )
    return {
        "speculative_config": {
            "method": "custom_class",
            "model": PROPOSER,
            "num_speculative_tokens": num_speculative_tokens,
        },
        "worker_cls": WORKER,
        "additional_config": {CONFIG_KEY: {"draft": draft, **settings}},
    }


def validated_settings(*, drop_rate, mass, selector, draft_sampled) -> dict:
    """The pruning and sampling settings, checked (``ValueError`` in one line), as stored in
    ``additional_config["specvlm"]``; the proposer checks a hand-written config the same way."""
    from specvlm.names import FEATURE_SELECTORS, SELECTORS  # light: imports nothing

    number = (int, float)
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, number) or not 0 <= drop_rate < 1:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
    if isinstance(mass, bool) or not isinstance(mass, number) or not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass!r}")
    if selector not in SELECTORS:
        raise ValueError(f"selector must be one of {', '.join(SELECTORS)}, got {selector!r}")
    if selector in FEATURE_SELECTORS:
        others = ", ".join(s for s in SELECTORS if s not in FEATURE_SELECTORS)
        raise ValueError(
            f"selector {selector!r} reads the draft's video features, which the vLLM plugin does "
            f"not compute; choose one of {others}"
        )
    if not isinstance(draft_sampled, bool):
        raise ValueError(f"draft_sampled must be True or False, got {draft_sampled!r}")
    return {
        "drop_rate": float(drop_rate),
        "mass": float(mass),
        "selector": selector,
        "draft_sampled": draft_sampled,
    }


def serve_flags(**kwargs) -> list[str]:
    """:func:`engine_args` as ``vllm serve`` command-line flags."""
    args = engine_args(**kwargs)
    return [
        "--speculative-config",
        json.dumps(args["speculative_config"], separators=(",", ":")),
        "--worker-cls",
        args["worker_cls"],
        "--additional-config",
        json.dumps(args["additional_config"], separators=(",", ":")),
    ]
