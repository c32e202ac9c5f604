"""Many mixed-thread calls on one model, for the record (``tests/test_threads.py`` runs a
smaller version of the same in CI).

    PYTHONPATH=. python bench/threads_soak.py [--threads 4] [--rounds 12]

For each family and each configuration (fixed drop rate 0.5, fixed 0.9, the automatic policy,
a copy of the target as the draft), ``--threads`` threads each make ``--rounds`` calls on one
shared target and one shared ``SpeculativeDecoder``, choosing at random between
``sd.generate`` and ``target.generate`` and between three prompts; every output is compared
with the single-threaded one. Prints one line per run and the totals: calls, errors, wrong
outputs, and whether both models were left as they were. Exit status 1 on any error, wrong
output or model left changed. Greedy, fp32, tiny random models, kernels through their
references.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPECVLM_KERNELS_BACKEND", "reference")

import specvlm  # noqa: E402
from tests import tiny_models as tm  # noqa: E402
from tests.test_threads import mixed_worker, model_state, setup  # noqa: E402

CONFIGS = {
    "drop 0.5": lambda target, draft: ((target, draft), {"drop_rate": 0.5}),
    "drop 0.9": lambda target, draft: ((target, draft), {"drop_rate": 0.9}),
    "auto": lambda target, draft: ((target, draft), {}),
    "copy draft": lambda target, draft: ((target, tm.make_copy_draft(target)), {"drop_rate": 0.5}),
}


def soak(family: str, config: str, threads: int, rounds: int) -> dict:
    target, draft, prompts, refs = setup(family)
    pair, kwargs = CONFIGS[config](target, draft)
    sd = specvlm.accelerate(pair, **kwargs)
    before = [model_state(m) for m in pair]
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        jobs = [
            pool.submit(mixed_worker, sd, target, prompts, refs, seed, rounds)
            for seed in range(threads)
        ]
        outcomes = [o for job in jobs for o in job.result()]
    return {
        "calls": len(outcomes),
        "speculative": sum(o[0] for o in outcomes),
        "errors": [o[3] for o in outcomes if o[3] is not None],
        "wrong": sum(1 for o in outcomes if o[3] is None and not o[2]),
        "restored": [model_state(m) for m in pair] == before,
        "seconds": time.perf_counter() - start,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    totals = {"calls": 0, "errors": 0, "wrong": 0, "changed": 0}
    with tm.single_threaded():
        for family in tm.FAMILIES:
            for config in CONFIGS:
                r = soak(family, config, args.threads, args.rounds)
                print(
                    f"{family:16s} {config:10s} calls {r['calls']:4d} "
                    f"(sd {r['speculative']:3d})  errors {len(r['errors'])}  wrong {r['wrong']}"
                    f"  restored {r['restored']}  {r['seconds']:.1f} s",
                    *r["errors"][:2],
                    flush=True,
                )
                totals["calls"] += r["calls"]
                totals["errors"] += len(r["errors"])
                totals["wrong"] += r["wrong"]
                totals["changed"] += not r["restored"]
    print("total", totals)
    return 0 if totals["errors"] == totals["wrong"] == totals["changed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
