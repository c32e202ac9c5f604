"""specvlm.attention: the routed attention's tree mode without the Triton kernel (CPU, reference
backend) runs SDPA with the tree as an explicit mask; it must equal the kernel's reference."""

from __future__ import annotations

import pytest
import torch

from specvlm.attention import TreePlan, _make_routed, attention_plan
from specvlm_kernels.reference import tree_attention_ref

CASES = [  # (hq, hk, prefix, nodes)
    (4, 2, 7, 5),
    (2, 2, 1, 1),
    (6, 1, 13, 3),
    (3, 3, 0, 4),
]


def _random_tree_mask(n: int, gen: torch.Generator) -> torch.Tensor:
    parents = [-1] + [int(torch.randint(-1, i, (1,), generator=gen)) for i in range(1, n)]
    mask = torch.eye(n, dtype=torch.bool)
    for i in range(n):
        p = parents[i]
        while p >= 0:
            mask[i, p] = True
            p = parents[p]
    return mask


@pytest.mark.parametrize("hq,hk,prefix,nodes", CASES)
def test_tree_mode_without_kernel_matches_reference(monkeypatch, hq, hk, prefix, nodes):
    monkeypatch.setenv("SPECVLM_KERNELS_BACKEND", "reference")
    gen = torch.Generator().manual_seed(hq * 100 + prefix * 10 + nodes)
    d = 8
    q = torch.randn(1, hq, nodes, d, generator=gen)
    k = torch.randn(1, hk, prefix + nodes, d, generator=gen)
    v = torch.randn(1, hk, prefix + nodes, d, generator=gen)
    tree_mask = _random_tree_mask(nodes, gen)
    routed = _make_routed("sdpa")
    plan = TreePlan(tree_mask)
    with attention_plan(plan):
        out, _ = routed(None, q, k, v, None, scaling=d**-0.5)
    want = tree_attention_ref(q, k, v, tree_mask, scale=d**-0.5).transpose(1, 2)
    assert out.shape == (1, nodes, hq, d)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)  # fp32, ~L-term sums
    # the router builds the explicit mask once per forward; its layers share it
    first = plan.as_explicit_mask(prefix + nodes, q.device)
    assert tuple(first.shape) == (1, 1, nodes, prefix + nodes)
    with attention_plan(plan):
        routed(None, q, k, v, None, scaling=d**-0.5)
    assert plan.as_explicit_mask(prefix + nodes, q.device) is first
