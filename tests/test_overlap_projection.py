"""specvlm.tools.overlap_projection: the overlapped schedule on the roofline model."""

import pytest

from specvlm.tools import overlap_projection as op
from specvlm.tools.perf_model import Scenario, project, rates_for_tau, with_mix
from specvlm.trees import Tree, chain, tree_of_size


def _scenario(tp=False, draft="llava-ov-7b"):
    sc = Scenario("llava-ov-72b", draft, 4, 1, 16384, tensor_parallel=tp)
    return with_mix(sc, op.CAPTURED_MIX)


@pytest.mark.parametrize("tp", [False, True])
def test_the_sequential_column_is_the_perf_models_projection(tp):
    sc = _scenario(tp)
    assert op.project_overlap(sc).sequential_speedup == pytest.approx(
        project(sc).decode_speedup, rel=1e-9
    )


@pytest.mark.parametrize("tp", [False, True])
def test_the_columns_are_ordered(tp):
    p = op.project_overlap(_scenario(tp))
    assert 0 < p.hit_rate < 1
    assert p.sequential_speedup <= p.gated_speedup <= p.ceiling_speedup
    assert p.lookahead_s > p.drafting_s  # the bonus guess costs one forward more


def test_hit_rate_for_inverts_the_step():
    p = op.project_overlap(_scenario())
    target = (p.sequential_speedup + p.ceiling_speedup) / 2
    h = p.hit_rate_for(target)
    assert 0 < h < 1
    assert p.tokens_per_step * p.ar_token_s / p.overlapped_step_s(h) == pytest.approx(target)
    assert p.hit_rate_for(p.ceiling_speedup * 1.01) is None


def test_outcome_coverage_on_a_hand_counted_tree():
    rates = (0.5, 0.25)
    tree = Tree.from_paths([[0]])  # root -> one child of rank 0
    # outcomes: (root, rank 1) 0.25; (node 0, rank 0) 0.5 * 0.5; (node 0, rank 1) 0.5 * 0.25
    assert op.outcome_coverage(tree, rates, 1) == pytest.approx(0.25)
    assert op.outcome_coverage(tree, rates, 2) == pytest.approx(0.5)
    assert op.outcome_coverage(tree, rates, 3) == pytest.approx(0.625)
    assert op.outcome_coverage(tree, rates, 99) == pytest.approx(0.625)


def test_one_guess_covers_the_rank0_leaf_of_a_chain():
    rates = rates_for_tau(3.0, chain(3))
    best_leaf = rates[0] ** 4
    assert op.outcome_coverage(chain(3), rates, 1) == pytest.approx(best_leaf)
    tree = tree_of_size(48, 6)
    rates = rates_for_tau(3.9, tree)
    covered = [op.outcome_coverage(tree, rates, m) for m in (1, 4, 16, 64)]
    assert covered == sorted(covered) and covered[-1] <= 1.0


def test_goal_lines_and_table_print():
    lines = op.goal_lines()
    assert len(lines) == 2 and all(("met" in x) or ("missed" in x) for x in lines)
    assert "ParallelVLM" in op.table()
