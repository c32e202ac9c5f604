"""SpecVLM as an lmms-eval model (specvlm/eval/lmms_model.py), through lmms-eval's own CLI on a
local task over the embedded clips (``--include_path``).

Needs lmms-eval, which needs a torchvision that loads: ``scripts/test_eval.sh`` runs this file
in ``.venv-eval`` (and sets SPECVLM_LMMS_EVAL_ENV=1, so a missing lmms-eval fails there instead
of skipping). In the other environments it is skipped with that reason.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

if os.environ.get("SPECVLM_LMMS_EVAL_ENV") != "1":
    pytest.importorskip(
        "lmms_eval", reason="lmms-eval is not installed here: scripts/test_eval.sh runs this"
    )

from specvlm.eval.benchmarks import Protocol, select  # noqa: E402
from specvlm.eval.fixtures import LMMS_TASK, write_lmms_task  # noqa: E402

SAMPLES = 3


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_lmms_task(str(tmp_path_factory.mktemp("task")), SAMPLES, frames=8)


def _lmms_eval(task_dir: str, out, model_args: str, env_extra=None):
    """lmms-eval's CLI on the local task; returns (results.json, lmms-eval's samples, ours)."""
    os.makedirs(out, exist_ok=True)
    log_dir = os.path.join(out, "specvlm-log")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **(env_extra or {}))
    env.pop("TRITON_INTERPRET", None)
    cmd = [
        sys.executable, "-m", "lmms_eval", "--model", "specvlm",
        "--model_args", f"frames=8,log_dir={log_dir},{model_args}".rstrip(","),
        "--tasks", LMMS_TASK, "--include_path", task_dir, "--output_path", str(out),
        "--batch_size", "1", "--log_samples",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (results_path,) = glob.glob(os.path.join(out, "**", "*_results.json"), recursive=True)
    (samples_path,) = glob.glob(os.path.join(out, "**", "*_samples_*.jsonl"), recursive=True)
    with open(results_path) as f:
        results = json.load(f)
    with open(samples_path) as f:
        lmms_samples = [json.loads(line) for line in f]
    with open(os.path.join(log_dir, "samples.jsonl")) as f:
        ours = [json.loads(line) for line in f]
    return results, lmms_samples, ours, proc.stdout + proc.stderr


def _metric(results: dict) -> float:
    return results["results"][LMMS_TASK]["exact_match,none"]


def _responses(lmms_samples: list[dict]) -> dict:
    return {s["doc_id"]: s["filtered_resps"] for s in lmms_samples}


def test_the_cli_finds_the_model_and_logs_tau_and_speedup(task_dir, tmp_path):
    """Found through the package's entry point (no setting); every answer identical to the
    target's; tau and speedups logged per request beside lmms-eval's own metric."""
    results, lmms_samples, ours, output = _lmms_eval(task_dir, tmp_path, "")
    assert 0.0 <= _metric(results) <= 1.0
    assert len(lmms_samples) == len(ours) == SAMPLES
    assert all(r["identical"] is True for r in ours)
    assert all(r["tau"] is not None and r["tau"] >= 1.0 for r in ours)
    assert all(r["decode_speedup"] is not None for r in ours)
    assert {r["task"] for r in ours} == {LMMS_TASK}
    # lmms-eval scored SpecVLM's answers
    by_doc = {r["doc_id"]: r["specvlm_answer"] for r in ours}
    for doc_id, resps in _responses(lmms_samples).items():
        assert resps == [by_doc[doc_id]] or resps == by_doc[doc_id]
    with open(tmp_path / "specvlm-log" / "summary.json") as f:
        summary = json.load(f)
    assert summary["samples"] == SAMPLES and summary["identical"] == SAMPLES
    assert f"specvlm {LMMS_TASK}/0: identical True" in output  # the per-request log lines


def test_the_plugin_variable_and_the_target_alone_give_the_same_metric(task_dir, tmp_path):
    """``LMMS_EVAL_PLUGINS=specvlm`` loads the model too; with ``answer_with=target`` lmms-eval
    scores the target's own answers, and the metric and every response equal SpecVLM's."""
    spec = _lmms_eval(task_dir, tmp_path / "specvlm", "")
    target = _lmms_eval(
        task_dir, tmp_path / "target", "answer_with=target", {"LMMS_EVAL_PLUGINS": "specvlm"}
    )
    assert _metric(spec[0]) == _metric(target[0])
    assert _responses(spec[1]) == _responses(target[1])


def test_the_legacy_plugin_mapping_names_the_model_class():
    """What ``LMMS_EVAL_PLUGINS=specvlm`` makes lmms-eval import, imported the same way: the
    class ``specvlm.models.<name>.<AVAILABLE_MODELS[name]>``, and the ``specvlm.tasks`` package
    it looks up (the entry point would hide a broken mapping in the CLI test)."""
    import importlib

    from specvlm.eval.lmms_model import SpecVLM
    from specvlm.models import AVAILABLE_MODELS, manifest

    assert AVAILABLE_MODELS == {"specvlm": "SpecVLM"}
    for name, class_name in AVAILABLE_MODELS.items():
        module = importlib.import_module(f"specvlm.models.{name}")
        assert getattr(module, class_name) is SpecVLM
    assert importlib.util.find_spec("specvlm.tasks").submodule_search_locations
    path = manifest().simple_class_path
    module, _, name = path.rpartition(".")
    assert getattr(importlib.import_module(module), name) is SpecVLM


def test_bad_model_arguments_are_refused_before_loading():
    from specvlm.eval.lmms_model import SpecVLM

    with pytest.raises(ValueError, match="unknown model arguments: bogus"):
        SpecVLM(bogus=1)
    with pytest.raises(ValueError, match="batch_size 1"):
        SpecVLM(batch_size=4)
    with pytest.raises(ValueError, match="answer_with"):
        SpecVLM(answer_with="draft")
    for kwargs, message in [
        ({"tree_size": 8, "drop_rate": "auto"}, "give a drop_rate too"),
        ({"tree_size": 999}, "tree_size must be in"),
        ({"dtype": "bf16"}, "dtype must be one of"),
        ({"selector": "best"}, "unknown selector"),
        ({"drop_rate": "1.5"}, "drop_rate must be in"),
    ]:
        with pytest.raises(ValueError, match=message):
            SpecVLM(**kwargs)


def test_the_protocol_shuffle_is_hf_datasets_shuffle():
    """VideoDetailCaption's protocol, ``shuffle(seed=42).select(100)``, picks the rows HF
    datasets picks."""
    from datasets import Dataset

    rows = Dataset.from_dict({"i": list(range(499))})
    expected = rows.shuffle(seed=42).select(range(100))["i"]
    assert select(list(range(499)), Protocol(samples=100, shuffle=True), None, 42) == expected
