"""One command for a first GPU run: tests, kernel benches, the embedded pair, decoder costs.

    bash scripts/gpu_report.sh [--out DIR]      # a CUDA machine, no network: 8 minutes at most
    bash scripts/gpu_report.sh --tiny           # the same steps on the CPU, small shapes (CI)

(``python -m specvlm.tools.gpu_report`` with ``PYTHONPATH`` at the repository root is the same.)
Every step writes into one results folder and the page ``REPORT.md`` collects them, with the
GPU, its driver and the Python, torch, Triton and transformers versions at the top:

1. ``env`` (cap 30 s): the machine and the versions (``env.json``).
2. ``gpu_tests`` (120 s): ``pytest tests/kernels -m gpu`` (compiled kernels, real-model
   shapes, CUDA graphs); on the CPU they are collected and skipped, which passes, while a
   session that collects nothing (pytest's exit 5), or on a GPU passes nothing, fails.
3. ``benches`` (140 s): the kernel benches at the report shapes (``SPECVLM_BENCH_SHAPES=report``:
   Qwen2.5-VL-7B/3B and LLaVA-OV-72B layer shapes) with GB/s, TFLOP/s and % of peak; the
   launch-bound ops (selection and prune: 9-11 launches; tree attention at N = 1) are timed in
   two regimes, eager calls and CUDA-graph replays (``bench/_common.py``); on the CPU the smoke
   shapes under the Triton interpreter, eagerly only (no CUDA graphs: the page says so).
4. ``expected`` (20 s): the analytic H100 expectation of each case in both regimes
   (``bench/roofline.py``: graph replay with 1.5 us between launches; eager with each launch
   issued from Python, about 12 us each, and a synchronize), so each measured row is set
   beside the expectation of its own regime.
5. ``bench_table`` (15 s): the benches' table and roofline plot (``bench/report.py``).
6. ``e2e`` (45 s): the embedded micro pair end to end (the target's ``generate``, naive
   speculative decoding, SpecVLM) with :func:`specvlm.tools.comparison.compare`.
7. ``decoders`` (65 s): per-forward times of random-weight text decoders built from the real
   configs of Qwen2.5-VL-7B / -3B and LLaVA-OV-7B / -0.5B (no network), in two regimes: eager,
   through the library's own decoder call and cache, and captured, a static cache and the
   forward replayed as a CUDA graph (on the CPU: not run): verification of 1 / 8 / 48 nodes and
   draft steps at 4k / 16k / 64k tokens of context (tiny configs and contexts with ``--tiny``).
8. ``perf_model`` (15 s): those times fed to the performance model, as
   :class:`specvlm.tools.perf_model.Measured` cost sources and as a
   :class:`~specvlm.tools.perf_model.Gpu` fitted to them (``perf.py``: the eager and the
   captured fixed cost per layer, which ``python -m specvlm.tools.perf_model --report
   OUT/perf_model.json`` then projects with).

Time (``budget.py``): one deadline for the whole run, 480 s on a GPU counted from the start of
``scripts/gpu_report.sh``; the caps above add up to 450 s, and 10 s are kept for the last page.
The report's own process imports neither torch nor pytest and touches no GPU; every step, the
Python ones included, runs in a process group of its own (and dies with the report), and is stopped
(SIGTERM, then SIGKILL, then abandoned) when it reaches the smaller of its cap and the time left
before the deadline; a step with no time left is not started; the pytest steps stop starting
tests shortly before their cap, so they still write what they measured. ``--tiny`` has its own
caps, about three times each step's longest time measured on a loaded 2-core machine (620 s in
all; such a loaded run took about 2 minutes). ``--budget SECONDS`` sets another total (tests).

``REPORT.md`` is rewritten before and after every step: a step that fails or overruns is
named at the top with what completed (a partial report), the others still run, and even a kill
of the whole command leaves the finished steps on disk and the page naming the step that was
running. The exit status is 0 when every step passed, 1 otherwise, 2 for a GPU run without a
GPU, 128 + N when the report got signal N. ``SPECVLM_REPORT_HANG=step[,step]`` makes those
steps hang (ignoring SIGTERM) instead of running: the test of the deadline.
"""
