"""lmms-eval tasks of the ``specvlm`` plugin: none are shipped.

lmms-eval 0.7 looks this package up whenever ``LMMS_EVAL_PLUGINS=specvlm`` is set (and fails if
it is missing), so it exists. Local tasks go through ``--include_path``: docs/eval.md, and
``python -m specvlm.eval.fixtures`` writes one over the embedded clips.
"""
