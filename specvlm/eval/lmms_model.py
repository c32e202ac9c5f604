"""SpecVLM as an lmms-eval model, ``specvlm`` (imported by lmms-eval only; ``pip install
"specvlm[eval]"``).

Found by lmms-eval through the ``lmms_eval.models`` entry point this package declares, or with
``LMMS_EVAL_PLUGINS=specvlm`` (which imports :mod:`specvlm.models`)::

    python -m lmms_eval --model specvlm --model_args target=DIR,draft=DIR,frames=32 \\
        --tasks videomme --batch_size 1 --output_path out/

Each generation request is answered by the target alone and by SpecVLM (``specvlm.accelerate``
on the same inputs, :class:`specvlm.eval.runner.Answering`). lmms-eval gets SpecVLM's answer
(``answer_with=target`` gives it the target's, to check that the task's metric is the same);
``log_dir`` (default ``specvlm-lmms-eval``) gets one line per request in ``samples.jsonl``
(the task and document, both answers, whether they are identical, tau, decode and end-to-end
times and speedups) and ``summary.json`` per ``generate_until`` call.

Model arguments: ``target``, ``draft`` (checkpoint directories; default: the embedded pair),
``frames`` (or lmms-eval's ``max_frames_num``; default 32), ``drop_rate`` (default 0.9;
``auto``: the automatic policy), ``selector``, ``tree_size``, ``capture``, ``device``,
``dtype``, ``threads``, ``seed``, ``answer_with``, ``log_dir``. Anything else is refused.
Generation options from the task: ``max_new_tokens`` (default 256), ``do_sample``,
``temperature``, ``top_p``, ``top_k``, ``num_beams`` 1, and the stop strings ``until`` (the
answer is cut at the first; decoding runs to the token limit or the end of the answer, the
same for both paths). Every request needs one video file.
"""

from __future__ import annotations

import json
import os

from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from specvlm.eval import results
from specvlm.eval.lmms_requests import (
    DEFAULT_MAX_NEW_TOKENS,
    cut_at_stops,
    describe,
    sampling_of,
    video_of,
)
from specvlm.eval.samples import Sample


class SpecVLM(lmms):
    """The target alone and SpecVLM on every request; SpecVLM's answer to lmms-eval."""

    def __init__(
        self,
        target: str | None = None,
        draft: str | None = None,
        frames: int | None = None,
        max_frames_num: int | None = None,
        drop_rate="0.9",
        selector: str = "two_stage",
        tree_size: int | None = None,
        capture: str = "auto",
        device: str | None = None,
        dtype: str | None = None,
        threads: int | None = None,
        seed: int = 0,
        answer_with: str = "specvlm",
        log_dir: str = "specvlm-lmms-eval",
        batch_size=1,
        max_batch_size=None,
        **unknown,
    ) -> None:
        super().__init__()
        if unknown:
            raise ValueError(f"specvlm: unknown model arguments: {', '.join(sorted(unknown))}")
        if int(batch_size) != 1:
            raise ValueError("specvlm: --batch_size 1 only (speculative decoding is batch 1)")
        if answer_with not in ("specvlm", "target"):
            raise ValueError(f"specvlm: answer_with must be specvlm or target, not {answer_with}")
        self.answer_with, self.log_dir = answer_with, log_dir
        self.answering = _answering(
            target, draft, int(frames or max_frames_num or 32), str(drop_rate), selector,
            tree_size, capture, device, dtype, threads, int(seed), log_dir,
        )  # fmt: skip
        self.records: list[dict] = []

    def generate_until(self, requests) -> list[str]:
        answers = []
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="SpecVLM responding")
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            where = f"{task} document {doc_id}"
            video = video_of(doc_to_visual(self.task_dict[task][split][doc_id]), where)
            gen = self.answering.generate_options(
                int(gen_kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS),
                sampling_of(gen_kwargs),
            )
            sample = Sample(f"{task}/{doc_id}", context, video)
            record = dict(self.answering.answer(len(self.records), sample, gen), task=task)
            if record.get("error"):
                raise ValueError(f"specvlm: {where}: {record['error']}")
            record["doc_id"] = doc_id
            self._log(record)
            answer = record[f"{self.answer_with}_answer"]
            answers.append(cut_at_stops(answer, gen_kwargs.get("until")))
            bar.update()
        bar.close()
        self._summary()
        return answers

    def _log(self, record: dict) -> None:
        self.records.append(record)
        results.append_sample(self.log_dir, record)
        logger.info(f"specvlm {record['id']}: {describe(record)}")

    def _summary(self) -> None:
        summary = results.summarize(self.records, self.answering.run.settings)
        with open(os.path.join(self.log_dir, results.SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=1)
        logger.info(f"specvlm: {summary['samples']} requests: {describe(summary)}")

    def loglikelihood(self, requests):
        raise NotImplementedError("specvlm generates: loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("specvlm: multi-round generation is not supported")


def _answering(target, draft, frames, drop_rate, selector, tree_size, capture, device, dtype,
               threads, seed, log_dir):  # fmt: skip
    """The :class:`~specvlm.eval.runner.Answering` of the model's arguments, every one checked
    as ``specvlm eval`` checks its options."""
    from types import SimpleNamespace

    import torch

    from specvlm.eval import results
    from specvlm.eval.arguments import check_specvlm_options
    from specvlm.eval.command import decoder_options, decoder_settings
    from specvlm.eval.runner import Answering, EvalRun
    from specvlm.tools.common import CAPTURE, checkpoint_pair

    if capture not in CAPTURE:
        raise ValueError(f"specvlm: capture must be one of {', '.join(CAPTURE)}, not {capture}")
    tree_size = None if tree_size is None else int(tree_size)
    check_specvlm_options(drop_rate, tree_size, selector, dtype, 0.9, cli=False)
    args = SimpleNamespace(
        benchmark="micro", target=target, draft=draft, device=device, threads=threads,
        drop_rate=drop_rate, selector=selector, seed=seed, capture=capture, overlap="off",
        tree_size=tree_size, dtype=dtype,
    )  # fmt: skip
    target_dir, draft_dir, dev = checkpoint_pair(args)
    options = decoder_options(args)
    settings = {
        "benchmark": "lmms-eval",
        "frames": frames,
        **decoder_settings(args, target_dir, draft_dir, dev),
    }
    results.open_run(log_dir, settings, restart=True)  # this run's requests only
    run = EvalRun(
        samples=[], out_dir=log_dir, settings=settings, target_dir=target_dir,
        draft_dir=draft_dir, device=dev, frames=frames, max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
        decoder_options=options, seed=seed, dtype=getattr(torch, dtype) if dtype else None,
    )  # fmt: skip
    return Answering(run)
