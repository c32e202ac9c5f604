"""The vLLM plugin's scores under tensor parallelism, without vLLM: two gloo processes each
score half of the heads of a tiny random attention through :class:`PrefillScorer` (the wrapper
vLLM's attention layers get), the scores are all-reduced once per step, and both ranks end with
the single-process all-heads scores and keep the same video positions."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import torch

from specvlm import selectors
from specvlm.families.base import VideoLayout
from specvlm.speculation import kept_positions
from specvlm.vllm_plugin.scoring import PrefillScorer, all_reduce_scores

LAYERS, HQ, HK, D = 3, 4, 2, 8
GRID = (2, 4, 4)
# request -> (text before the video, text after it); the video is GRID's 32 tokens
REQUESTS = {"a": (3, 5), "b": (4, 12)}
# the steps: request -> tokens scheduled ("b" is prefilled in two chunks, completing a step later)
STEPS = [{"a": 40, "b": 20}, {"b": 28}, {}]


def _layout(rid: str) -> tuple[VideoLayout, int]:
    before, after = REQUESTS[rid]
    video = GRID[0] * GRID[1] * GRID[2]
    positions = torch.arange(before, before + video)
    return VideoLayout(positions, GRID, (), before + video), before + video + after


class _Impl:
    scale = D**-0.5

    def forward(self, layer, query, key, value, kv_cache, attn_metadata, *args, **kwargs):
        return query


class _GlooGroup:
    """What the scorer uses of vLLM's GroupCoordinator, over gloo; counts the
    collectives."""

    def __init__(self, world_size: int):
        import torch.distributed as dist

        self.world_size = world_size
        self.rank_in_group = dist.get_rank()
        self.calls = 0

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        self.calls += 1
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor


def _attention(step: int, layer: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's flat-batch queries ``[rows, HQ, D]`` and keys ``[rows, HK, D]`` of one layer,
    all heads (the same on every rank)."""
    gen = torch.Generator().manual_seed(1000 * step + layer)
    return torch.randn(rows, HQ, D, generator=gen), torch.randn(rows, HK, D, generator=gen)


def _serve(rank: int, world: int, group) -> tuple[dict, list[int]]:
    """Run :data:`STEPS` through a scorer that sees rank ``rank``'s share of the heads; returns
    the grid scores per request and the collectives made in each step."""
    runner = SimpleNamespace(
        input_batch=SimpleNamespace(req_ids=list(REQUESTS)),
        requests={rid: SimpleNamespace(num_computed_tokens=0) for rid in REQUESTS},
    )
    layers = {f"layer{i}": SimpleNamespace(impl=_Impl(), head_size=D) for i in range(LAYERS)}
    scorer = PrefillScorer(_layout)
    scorer.install(runner, layers)
    scorer.group = group
    q_heads = slice(rank * HQ // world, (rank + 1) * HQ // world)
    k_heads = slice(rank * HK // world, (rank + 1) * HK // world)
    scores, calls = {}, []
    for step, scheduled in enumerate(STEPS):
        scorer.begin_step(scheduled, has_new=step == 0)
        rows = sum(scheduled.values())
        with torch.inference_mode():  # as vLLM's forward runs
            for i, layer in enumerate(layers.values()):
                q, k = _attention(step, i, rows)
                q, k = q[:, q_heads], k[:, k_heads]
                layer.impl.forward(layer, q, k, k, None, object())
        scorer.end_step()
        before = group.calls if group is not None else 0
        scorer.reduce_completed()
        calls.append((group.calls if group is not None else 0) - before)
        for rid, n in scheduled.items():
            runner.requests[rid].num_computed_tokens += n
    for rid in REQUESTS:
        scores[rid] = scorer.take(rid).grid_scores(LAYERS)
    return scores, calls


def _kept(scores: dict) -> dict:
    selector = selectors.resolve("two_stage", mass=0.4, seed=0)
    out = {}
    for rid, s in scores.items():
        layout, prompt_len = _layout(rid)
        out[rid] = kept_positions(prompt_len, layout, s, 0.75, selector)[1]
    return out


def _rank(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        unreduced, _ = _serve(rank, 2, None)
        scores, calls = _serve(rank, 2, _GlooGroup(2))
        # ranks that disagree (rank 1 gave up on its request): no hang, each keeps its own
        own = [torch.full((1, 3), 7.0)] if rank == 0 else []
        result = all_reduce_scores(own, _GlooGroup(2))
        disagreeing = len(result) == len(own) and all(
            torch.equal(a, b) for a, b in zip(result, own, strict=True)
        )
        torch.save(
            dict(
                scores=scores,
                calls=calls,
                unreduced=unreduced,
                kept=_kept(scores),
                disagreeing=disagreeing,
            ),
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_all_reduced_scores_equal_all_heads_and_ranks_prune_alike(tmp_path):
    torch.multiprocessing.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    full, no_collective = _serve(0, 1, None)
    full_kept = _kept(full)
    assert no_collective == [0, 0, 0]
    for r in ranks:
        # every step the size check; then the buffers, in the steps that completed a request
        assert r["calls"] == [2, 2, 1]
        assert r["disagreeing"]  # one rank held none: no hang, each kept its own buffers
        for rid in REQUESTS:
            # the mean over the 4 heads, from two means over 2: fp32 rounding only
            torch.testing.assert_close(r["scores"][rid], full[rid], rtol=1e-5, atol=1e-7)
            assert torch.equal(r["kept"][rid], full_kept[rid])
    for rid in REQUESTS:
        assert torch.equal(ranks[0]["scores"][rid], ranks[1]["scores"][rid])
        assert torch.equal(ranks[0]["kept"][rid], ranks[1]["kept"][rid])
        # without the reduction each rank's scores come from its own heads
        assert not torch.allclose(ranks[0]["unreduced"][rid], ranks[1]["unreduced"][rid])


def test_one_rank_makes_no_collective():
    class Refuses:
        world_size = 1

        def all_reduce(self, tensor):
            raise AssertionError("no collective in a world of one")

    buffer = torch.ones(1, 5)
    assert all_reduce_scores([buffer], Refuses())[0] is buffer
    assert all_reduce_scores([buffer], None)[0] is buffer
