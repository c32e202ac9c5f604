"""The micro pair served by vLLM's multiprocess engine (engine core and worker in their own
processes, as under ``vllm serve``), with the SpecVLM draft: prints the tokens and the plugin's
stats (from the worker process, through ``collective_rpc``) as JSON. Run by
tests/test_vllm_plugin.py in a subprocess."""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from vllm import SamplingParams

    from specvlm.vllm_plugin import engine_args
    from tests import vllm_support as vs

    count = int(sys.argv[1])
    micro = vs.micro_requests(count)
    params = SamplingParams(max_tokens=16, temperature=0.0)
    kwargs = engine_args(draft=vs.micro_draft(), num_speculative_tokens=4)
    with vs.micro_engine(disable_log_stats=False, **kwargs) as llm:
        outs = llm.generate([r for r, _ in micro], params, use_tqdm=False)
        stats = llm.collective_rpc("specvlm_stats")
    result = dict(
        tokens=[list(o.outputs[0].token_ids) for o in outs], stats=stats, main_pid=os.getpid()
    )
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
