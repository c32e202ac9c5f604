"""``specvlm eval``: a published benchmark (or the embedded clips), run with the target alone
and with SpecVLM, sample by sample; and SpecVLM as an lmms-eval model.

samples     one benchmark sample, its prompt, and the scoring of an answer
benchmarks  the published benchmarks: where each comes from, its protocol, its published numbers
datasets    reading each benchmark's files as the dataset ships them (no torch)
fixtures    each benchmark's file format written from the embedded clips (tests, trying it out)
arguments   the command's options and their checks (no torch)
runner      the run: both paths per sample, resumable, with a progress bar
results     samples.jsonl, run.json, summary.json, the table and the plot
lmms_model  the lmms-eval model (imported by lmms-eval only)

Nothing here is imported by ``specvlm`` itself: the eval is a room of its own.
"""
