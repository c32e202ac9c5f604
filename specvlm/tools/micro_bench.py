"""The embedded pair on held-out caption questions, as the CPU studies in ``bench/`` run it
(``bench/selector_study.py``, ``bench/dynamic_tree_cpu.py``, ``bench/acceptance_by_depth.py``):
the pair on the CPU, its prompts, and trees named on their command lines."""

from __future__ import annotations

CAPTION_PROMPT = "describe the video ."


def embedded_pair_and_prompter():
    """The embedded target and draft on the CPU, and the target's prompter."""
    from specvlm.tools.common import EMBEDDED, load_pair
    from specvlm.tools.video_input import VideoPrompter

    target, draft = load_pair(str(EMBEDDED / "target"), str(EMBEDDED / "draft"), "cpu")
    return target, draft, VideoPrompter(EMBEDDED / "target", target.config)


def caption_prompts(prompter, clips: int, frames: int) -> list[dict]:
    """The caption question on held-out clips ``0 .. clips-1`` of ``frames`` frames."""
    from specvlm.micro.data import held_out_clip

    return [prompter(held_out_clip(n, frames=frames), CAPTION_PROMPT) for n in range(clips)]


def tree_by_name(name: str):
    """``chainN`` (a chain of N) or ``treeN`` (the N-node tree the bench builds,
    ``tree_of_size``; tree48 is the default tree); SystemExit for anything else."""
    from specvlm.trees import chain, tree_of_size

    for prefix, make in (("chain", chain), ("tree", tree_of_size)):
        count = name[len(prefix) :]
        if name.startswith(prefix) and count.isdigit() and int(count) > 0:
            return make(int(count))
    raise SystemExit(f"unknown tree {name!r}: chainN or treeN")
