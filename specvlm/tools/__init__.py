"""The tools built on the library: the ``specvlm`` command line (demo, bench, selfcheck), the
method comparison and its timing, video inputs, figures and the GPU performance model.

The library (``specvlm/*.py``, ``specvlm/families/``) never imports from here.
"""
