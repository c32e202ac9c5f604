"""specvlm.tools.fixed_costs: the regimes' fixed costs, their sources, and the CPU measurement
(``docs/bench/fixed_costs.json``, made by ``bench/fixed_cost.py``)."""

from __future__ import annotations

import pytest

from specvlm.tools import fixed_costs as fc
from specvlm.tools.perf_model import H100


def test_the_cpu_record_names_its_machine_and_captured_forwards_cost_less():
    record = fc.cpu_record()
    assert record is not None and "CPU" in record["hardware"] and record["torch"]
    costs = fc.per_layer_us(record)
    assert {m for m, _ in costs} == {"micro target", "micro draft"}
    for row in record["models"]:
        eager, captured = costs[(row["model"], "eager")], costs[(row["model"], "captured")]
        assert eager == pytest.approx(row["eager_s"] / row["layers"] * 1e6)
        assert captured < eager  # what capture is for; a re-measurement that loses fails here


def test_describe_labels_assumptions_and_the_cpu_measurement():
    lines = fc.describe(H100, record=fc.cpu_record())
    assert "eager: 300.0 us (assumed:" in lines[0] and "captured: 8.0 us (assumed:" in lines[1]
    assert lines[2].startswith("* measured on ") and "micro draft" in lines[2]
    assert len(fc.describe(H100)) == 2  # no record: the assumptions alone


def test_gpu_fixed_cost_by_regime():
    assert H100.fixed_us("eager") == fc.EAGER_US and H100.fixed_us("captured") == fc.CAPTURED_US
    with pytest.raises(ValueError, match="regime must be one of"):
        H100.fixed_us("graph")
