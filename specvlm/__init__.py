"""SpecVLM: lossless verifier-guided speculative decoding for video LLMs.

The orchestration (``specvlm.accelerate``) is not built yet; the kernels it will use live in
:mod:`specvlm_kernels`.
"""

__version__ = "0.1.0"
