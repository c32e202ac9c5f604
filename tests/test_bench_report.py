"""bench/report.py: pytest-benchmark JSON -> Markdown table and roofline plot."""

import importlib.util
import json
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[1] / "bench" / "report.py"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(tmp_path, device):
    data = {
        "benchmarks": [
            {
                "name": "test_tree[llava-ov-7b-L32768-N26]",
                "group": "tree_attention",
                "stats": {"median": 50e-6},
                "extra_info": {"flops": 4.0e9, "bytes": 1.2e8, "device": device},
            },
            {
                "name": "test_scores[llava-ov-7b-16k]",
                "group": "scores",
                "stats": None,
                "extra_info": {"flops": 1.0e10, "bytes": 5e7, "device": device},
            },
        ]
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def test_table_has_one_row_per_benchmark(report, tmp_path):
    records = report.load_records(_write(tmp_path, "NVIDIA H100 80GB HBM3"))
    table = report.markdown_table(records)
    assert table.count("\n") == 2 + len(records)
    assert "test_tree[llava-ov-7b-L32768-N26]" in table
    assert "50" in table  # median 50 us recovered from stats


def test_roofline_plot_written_for_gpu_records(report, tmp_path):
    out = tmp_path / "roofline.png"
    assert (
        report.main(
            [
                str(_write(tmp_path, "NVIDIA H100 80GB HBM3")),
                "--plot",
                str(out),
                "--table",
                str(tmp_path / "t.md"),
            ]
        )
        == 0
    )
    assert out.stat().st_size > 1000
    assert (tmp_path / "t.md").read_text().startswith("| name")


def test_roofline_plot_skipped_for_cpu_records(report, tmp_path):
    out = tmp_path / "roofline.png"
    assert not report.roofline_plot(report.load_records(_write(tmp_path, "cpu (x86_64)")), out)
    assert not out.exists()


def test_speedup_over_the_eager_baseline_of_the_group(report):
    records = [
        {"group": "g1", "impl": "triton", "median_us": 10.0, "name": "a"},
        {"group": "g1", "impl": "eager", "median_us": 40.0, "name": "b"},
        {"group": "g2", "impl": "triton", "median_us": 5.0, "name": "c"},  # no baseline
    ]
    out = report.add_speedups(records)
    assert out[0]["speedup"] == 4.0 and out[1]["speedup"] == 1.0 and "speedup" not in out[2]
    assert "speedup" in report.markdown_table(out).splitlines()[0]
