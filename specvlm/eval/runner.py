"""The run of ``specvlm eval``: every sample with the target alone, then with SpecVLM.

Per sample: the video's frames (the protocol's count, spread evenly over the video or over the
question's segment), the prompt through the target's processor, the target's own
``generate`` and SpecVLM's, each timed as :mod:`specvlm.tools.timing` times every method
(decode: first new token to the end; end to end: the whole call), both answers decoded and
scored, and the record appended to ``samples.jsonl`` at once (:mod:`specvlm.eval.results`).
The first sample runs once untimed on both paths first (lazy initialisation, the automatic
policy's one-time cost measurement), so the first timed sample is like the others. A sample
whose video cannot be read is recorded as failed (its ``error``) and the run goes on; the next
run of the same command tries it again.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import specvlm
from specvlm.devices import cuda_devices
from specvlm.eval import results
from specvlm.eval.samples import Sample, score
from specvlm.tools.common import InputError, inputs_to, load_pair
from specvlm.tools.timing import Timing, timed
from specvlm.tools.video_input import VideoPrompter, read_video


@dataclass
class EvalRun:
    """What one run needs: the samples, where they go, and how each is generated."""

    samples: list[Sample]
    out_dir: str
    settings: dict  # run.json (results.open_run)
    target_dir: str
    draft_dir: str
    device: torch.device  # where the inputs go (with device_map: the target's first device)
    frames: int
    max_new_tokens: int
    decoder_options: dict  # specvlm.accelerate's keywords
    sampling: dict | None = None  # do_sample=True and its options; None: greedy
    seed: int = 0
    dtype: torch.dtype | None = None
    restart: bool = False
    progress: bool = True
    plot: bool = True
    published: dict | None = None
    device_map: str | None = None  # "auto": the models spread over the GPUs (accelerate)


def load_frames(sample: Sample, frames: int) -> np.ndarray:
    """``frames`` uint8 RGB frames of the sample's video (an embedded clip is rendered)."""
    if isinstance(sample.video, int):
        from specvlm.micro.data import held_out_example

        return held_out_example("caption", sample.video, frames)[2]
    return read_video(sample.video, frames, sample.segment)


class _Paths:
    """The two ways one sample is answered: the target's ``generate`` and SpecVLM's."""

    def __init__(self, run: EvalRun, target, draft):
        self.run, self.target = run, target
        self.decoder = specvlm.accelerate((target, draft), **run.decoder_options)
        self.devices = cuda_devices(target, draft)

    def target_alone(self, inputs: dict, gen: dict, seed: int) -> Callable:
        def generate(streamer):
            if gen.get("do_sample"):
                torch.manual_seed(seed)
            return self.target.generate(**inputs, streamer=streamer, **gen)

        return generate

    def specvlm(self, inputs: dict, gen: dict, seed: int) -> Callable:
        extra = {}
        if gen.get("do_sample"):
            device = inputs["input_ids"].device
            extra["generator"] = torch.Generator(device).manual_seed(seed)
        return lambda streamer: self.decoder.generate(**inputs, streamer=streamer, **gen, **extra)

    def both(self, inputs: dict, gen: dict, seed: int) -> tuple[tuple, tuple]:
        """``((target output, Timing), (SpecVLM output, Timing))`` with ``generate`` options
        ``gen``; sampled paths are seeded with ``seed``."""
        with torch.no_grad():
            target = timed(self.target_alone(inputs, gen, seed), self.devices)
            spec = timed(self.specvlm(inputs, gen, seed), self.devices)
        return target, spec


def _record(index: int, sample: Sample, answers: dict, times: dict[str, Timing], stats) -> dict:
    """One line of ``samples.jsonl``."""
    target_ids, spec_ids = answers["target_ids"], answers["specvlm_ids"]
    identical = None if answers["sampled"] else target_ids == spec_ids
    record = {
        "id": sample.id,
        "index": index,
        "reference": sample.reference,
        "target_answer": answers["target"],
        "specvlm_answer": answers["specvlm"],
        "identical": identical,
        "target_score": score(sample, answers["target"]),
        "specvlm_score": score(sample, answers["specvlm"]),
        "tau": stats.mean_accepted_length if stats.speculated else None,
        "speculated": stats.speculated,
        "video_tokens": stats.video_tokens,
        "kept_video_tokens": stats.kept_video_tokens,
    }
    for path, t in times.items():
        record.update(
            {
                f"{path}_new_tokens": t.new_tokens,
                f"{path}_decode_s": t.decode_s,
                f"{path}_e2e_s": t.e2e_s,
                f"{path}_ttft_s": t.ttft_s,
            }
        )
    record["decode_speedup"] = results.speedup([record], "decode")
    record["e2e_speedup"] = results.speedup([record], "e2e")
    return record


class Answering:
    """Frames -> inputs -> both paths -> a record, for one sample at a time (used by the run
    and by the lmms-eval model)."""

    def __init__(self, run: EvalRun):
        from transformers import AutoConfig

        self.run, self.warm = run, False
        # the processor first: a checkpoint it cannot serve fails before the models load
        self.prompter = VideoPrompter(run.target_dir, AutoConfig.from_pretrained(run.target_dir))
        target, draft = load_pair(
            run.target_dir, run.draft_dir, run.device, run.dtype, run.device_map
        )
        self.paths = _Paths(run, target, draft)
        self.input_device = run.device
        if run.device_map is not None:  # where the target's embeddings are
            self.input_device = target.get_input_embeddings().weight.device

    def generate_options(self, max_new_tokens: int | None = None, sampling="run") -> dict:
        """``generate`` options: the run's, or ``max_new_tokens`` / ``sampling`` given."""
        sampling = self.run.sampling if sampling == "run" else sampling
        limit = max_new_tokens or self.run.max_new_tokens
        return dict(sampling or {"do_sample": False}, max_new_tokens=limit)

    def inputs(self, sample: Sample) -> dict:
        cpu = self.prompter(load_frames(sample, self.run.frames), sample.prompt)
        return inputs_to(cpu, self.input_device, self.run.dtype)

    def answer(self, index: int, sample: Sample, gen: dict | None = None) -> dict:
        """Both paths on ``sample`` (``gen``: :meth:`generate_options`, the run's by default);
        the record of ``samples.jsonl``. The first call runs both paths once untimed first
        (lazy initialisation, the automatic policy's cost measurement), so its times are like
        the others'. A video that cannot be read gives a failed record (``error``)."""
        gen = gen or self.generate_options()
        try:
            inputs = self.inputs(sample)
        except InputError as err:
            return {"id": sample.id, "index": index, "error": str(err), "identical": None}
        if not self.warm:
            self.paths.both(inputs, gen, self.run.seed)
            self.warm = True
        start = inputs["input_ids"].shape[1]
        (target_out, target_t), (spec_out, spec_t) = self.paths.both(
            inputs, gen, self.run.seed + index
        )
        target_ids, spec_ids = target_out[0, start:].tolist(), spec_out[0, start:].tolist()
        decode = self.prompter.tokenizer.decode
        answers = {
            "target_ids": target_ids,
            "specvlm_ids": spec_ids,
            "target": decode(target_ids, skip_special_tokens=True).strip(),
            "specvlm": decode(spec_ids, skip_special_tokens=True).strip(),
            "sampled": bool(gen.get("do_sample")),
        }
        times = {"target": target_t, "specvlm": spec_t}
        return _record(index, sample, answers, times, self.paths.decoder.last_stats)


def _progress_bar(run: EvalRun, done: int):
    from tqdm.auto import tqdm

    return tqdm(
        total=len(run.samples),
        initial=done,
        desc=run.settings["benchmark"],
        unit="sample",
        file=sys.stderr,
        disable=not run.progress,
        dynamic_ncols=True,
    )


def run_eval(run: EvalRun) -> dict:
    """Run (or resume) ``run``; write the outputs; return the summary."""
    done = results.open_run(run.out_dir, run.settings, run.restart)
    pending = [(i, s) for i, s in enumerate(run.samples) if s.id not in done]
    if pending:
        answering = Answering(run)
        bar = _progress_bar(run, len(run.samples) - len(pending))
        with bar:
            for index, sample in pending:
                record = answering.answer(index, sample)
                results.append_sample(run.out_dir, record)
                done[sample.id] = record
                bar.set_postfix_str(_postfix(done.values()), refresh=False)
                bar.update()
    return write_outputs(run, [done[s.id] for s in run.samples])


def _postfix(records) -> str:
    records = list(records)
    failed = sum(1 for r in records if r.get("error"))
    records = [r for r in records if not r.get("error")]
    same = [r["identical"] for r in records if r["identical"] is not None]
    taus = [r["tau"] for r in records if r["tau"] is not None]
    parts = [f"identical {sum(same)}/{len(same)}"] if same else []
    parts += [f"tau {sum(taus) / len(taus):.2f}"] if taus else []
    parts += [f"{failed} failed"] if failed else []
    return ", ".join(parts)


def write_outputs(run: EvalRun, records: list[dict]) -> dict:
    """summary.json, table.md and (unless turned off) plot.png from every sample's record."""
    import json
    from pathlib import Path

    out = Path(run.out_dir)
    summary = results.summarize(records, run.settings, run.published)
    (out / results.SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    (out / results.TABLE_FILE).write_text(results.table(summary))
    if run.plot and records:
        title = f"{run.settings['benchmark']}: {len(records)} samples"
        results.plot(records, str(out / results.PLOT_FILE), title)
    return summary
