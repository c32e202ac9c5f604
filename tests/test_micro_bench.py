"""The CPU studies' shared pieces (specvlm/tools/micro_bench.py): trees by name, the caption
prompts on held-out clips."""

from __future__ import annotations

import pytest

from specvlm.tools.micro_bench import CAPTION_PROMPT, caption_prompts, tree_by_name
from specvlm.trees import chain, default_tree, tree_of_size


def test_trees_by_name():
    assert tree_by_name("chain6") == chain(6)
    assert tree_by_name("tree16") == tree_of_size(16)
    assert tree_by_name("tree48") == default_tree()
    for bad in ("chain0", "tree", "treex", "chain-2", "star5", ""):
        with pytest.raises(SystemExit, match="chainN or treeN"):
            tree_by_name(bad)


def test_caption_prompts_one_per_clip():
    seen = []

    def prompter(frames, prompt):
        seen.append((frames.shape[0], prompt))
        return {"frames": frames}

    prompts = caption_prompts(prompter, clips=3, frames=4)
    assert len(prompts) == 3 and seen == [(4, CAPTION_PROMPT)] * 3
    assert not (prompts[0]["frames"] == prompts[1]["frames"]).all()  # held-out clips 0 and 1
