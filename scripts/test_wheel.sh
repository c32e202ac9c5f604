#!/usr/bin/env bash
# The project as a user installs it: the wheel, not the editable checkout the tests use.
#
# 1. Builds the wheel (pip wheel --no-deps) from a copy of the checkout's files (tracked and
#    untracked-but-not-ignored), so nothing is written into the checkout and no stale build/
#    directory leaks into it.
# 2. Installs it, not editable, into a fresh virtual environment that reuses the torch,
#    triton and transformers of scripts/env.sh's .venv (a .pth line appends .venv's
#    site-packages after the new environment's own, and --system-site-packages keeps a
#    system-wide torch visible as it is to .venv) instead of installing them again: a few
#    seconds, against about a minute for a fresh torch, triton and transformers. .venv's
#    editable specvlm is not active there (its .pth files are not read), and the script checks
#    that specvlm is imported from the new environment.
# 3. From a directory outside the checkout: `specvlm demo` (the embedded micro pair on a
#    generated clip, no download; one timed run), whose answer must be the target's; `specvlm
#    vllm-args`; and, in the installed distribution (importlib.metadata), the package data
#    (specvlm/assets/micro/{target,draft}: same bytes as the checkout's), the `specvlm` console
#    script and its entry point, and the modules the vLLM engine options name
#    (specvlm.vllm_plugin.proposer / .worker). The plugin needs no vLLM entry point: vLLM loads
#    it by those dotted names (speculative_config.model, worker_cls); the distribution
#    declares none, and any it did declare would have to resolve. Then lmms-eval's entry point
#    (specvlm.models:manifest) and the modules it names, and `specvlm eval --benchmark micro`
#    on two clips, whose answers must be the target's.
#
# Usage: bash scripts/test_wheel.sh (makes .venv first if needed, as scripts/test.sh does).
# KEEP=1 keeps the work directory (the wheel, the environment) and prints its path.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh" # cd to the checkout, activate .venv
REPO=$PWD
START=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/specvlm-wheel.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "test_wheel: work directory $WORK (kept)"
else
    trap 'rm -rf "$WORK"' EXIT
fi

# 1. the wheel, built from a copy of the checkout
mkdir "$WORK/src" "$WORK/dist" "$WORK/run"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$REPO" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf - | tar -xf - -C "$WORK/src"
else
    tar --exclude=./.venv --exclude=./.venv-vllm -cf - . | tar -xf - -C "$WORK/src"
fi
if python -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 68)" \
    2>/dev/null; then
    ISOLATION=--no-build-isolation # .venv's setuptools builds it: no download
else
    ISOLATION=
fi
python -m pip wheel --quiet --no-deps $ISOLATION --wheel-dir "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/specvlm-*.whl)
echo "test_wheel: built $(basename "$WHEEL") ($(du -k "$WHEEL" | cut -f1) KiB)" \
    "in $((SECONDS - START)) s"

# 2. a fresh environment: the wheel installed there, the dependencies reused from .venv
BASE_SITE=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python -m venv --system-site-packages --without-pip "$WORK/venv"
SITE=$("$WORK/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$BASE_SITE" >"$SITE/_specvlm_test_wheel_deps.pth"
python -m pip --python "$WORK/venv/bin/python" install --quiet --no-deps --no-index "$WHEEL"
echo "test_wheel: installed into a fresh environment at $((SECONDS - START)) s"

# 3. from outside the checkout
cd "$WORK/run"
unset PYTHONPATH TRITON_INTERPRET # the kernels' PyTorch references on a CPU, as a user's demo
export SPECVLM_WHEEL_SITE=$SITE SPECVLM_REPO=$REPO
"$WORK/venv/bin/python" - <<'EOF'
import hashlib
import importlib.metadata as md
import importlib.util
import os
import sys

site = os.path.realpath(os.environ["SPECVLM_WHEEL_SITE"])
repo = os.environ["SPECVLM_REPO"]


def inside(path):
    return os.path.realpath(path).startswith(site + os.sep)


import specvlm  # noqa: E402  (light: no torch)

assert inside(specvlm.__file__), f"specvlm imported from {specvlm.__file__}, not from {site}"
kernels = importlib.util.find_spec("specvlm_kernels")  # found, not imported (torch, triton)
assert kernels is not None and inside(kernels.origin), f"specvlm_kernels: {kernels}"
dist = md.distribution("specvlm")
assert inside(dist.locate_file("specvlm/__init__.py")), "the specvlm distribution is not the wheel's"
assert dist.version == specvlm.__version__, (dist.version, specvlm.__version__)

# the package data: the embedded micro pair, byte for byte
files = {str(f) for f in dist.files}
for role in ("target", "draft"):
    for name in (
        "config.json", "generation_config.json", "model.safetensors", "processor_config.json",
        "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
    ):
        rel = f"specvlm/assets/micro/{role}/{name}"
        assert rel in files, f"{rel} is not in the wheel"
        with open(dist.locate_file(rel), "rb") as a, open(os.path.join(repo, rel), "rb") as b:
            assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest(), rel
assert not any(f.startswith(("tests/", "bench/", "scripts/")) for f in files), "test files shipped"

# the console script and its entry point
(script,) = [ep for ep in dist.entry_points if ep.group == "console_scripts"]
assert (script.name, script.value) == ("specvlm", "specvlm.tools.cli:main"), script
assert os.path.isfile(os.path.join(sys.prefix, "bin", "specvlm")), "no bin/specvlm"

# vLLM: the modules the engine options name (no vLLM needed to find them)
from specvlm.vllm_plugin import PROPOSER, WORKER  # noqa: E402

for dotted in (PROPOSER, WORKER):
    spec = importlib.util.find_spec(dotted.rsplit(".", 1)[0])
    assert spec is not None and inside(spec.origin), f"{dotted}: module not in the wheel"
vllm_eps = [ep for ep in dist.entry_points if ep.group.startswith("vllm")]
for ep in vllm_eps:  # none today: the plugin is named by dotted path, not by entry point
    assert importlib.util.find_spec(ep.module) is not None, f"entry point {ep} does not resolve"
# lmms-eval finds the `specvlm` model by this entry point (docs/eval.md): it must resolve, and
# the class it names must be in the wheel (found, not imported: that needs lmms-eval)
(lmms,) = [ep for ep in dist.entry_points if ep.group == "lmms_eval.models"]
assert (lmms.name, lmms.value) == ("specvlm", "specvlm.models:manifest"), lmms
assert callable(lmms.load()), lmms
for module in ("specvlm.models.specvlm", "specvlm.eval.lmms_model", "specvlm.tasks"):
    spec = importlib.util.find_spec(module)
    assert spec is not None and inside(spec.origin), f"{module}: not in the wheel"
groups = sorted({ep.group for ep in dist.entry_points})
print(f"test_wheel: {len(files)} files; entry point groups {groups}; vLLM entry points "
      f"{[ep.value for ep in vllm_eps] or 'none (none needed)'}; package data identical")
EOF
FLAGS=$("$WORK/venv/bin/specvlm" vllm-args --draft /models/draft)
case "$FLAGS" in
*specvlm.vllm_plugin.proposer.SpecVLMProposer*specvlm.vllm_plugin.worker.SpecVLMWorker*) ;;
*)
    echo "test_wheel: unexpected vllm-args output: $FLAGS" >&2
    exit 1
    ;;
esac
echo "test_wheel: distribution checked at $((SECONDS - START)) s"
"$WORK/venv/bin/specvlm" demo --repeats 1 --max-new-tokens 12 --json demo.json
"$WORK/venv/bin/python" - <<'EOF'
import json

record = json.load(open("demo.json"))
assert record["identical"] is True and record["text"], record
print(f"test_wheel: demo answer {record['text']!r}, identical to the target's")
EOF
"$WORK/venv/bin/specvlm" eval --benchmark micro --limit 2 --max-new-tokens 8 --no-progress \
    --out eval >/dev/null
"$WORK/venv/bin/python" - <<'EOF'
import json

summary = json.load(open("eval/summary.json"))
assert summary["samples"] == 2 and summary["identical"] == 2, summary
print(f"test_wheel: specvlm eval --benchmark micro: 2/2 identical, tau {summary['tau']:.2f}")
EOF
echo "test_wheel: passed in $((SECONDS - START)) s"
