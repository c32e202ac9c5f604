"""``python -m specvlm.tools.gpu_report``: see the package docstring."""

import os
import sys

from specvlm.tools.gpu_report.runner import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)  # every file is written and closed: skip the interpreter's (slow) teardown
