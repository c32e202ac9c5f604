"""SpecVLM: lossless verifier-guided speculative decoding for video LLMs.

``specvlm.accelerate((target, draft))`` wraps a big and a small model of one family
(LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL); its ``generate`` returns exactly the target's greedy
output. The kernels it uses live in :mod:`specvlm_kernels`.
"""

from specvlm.accelerate import GenerationStats, SpeculativeDecoder, accelerate
from specvlm.trees import Tree, chain, default_tree

__all__ = ["GenerationStats", "SpeculativeDecoder", "Tree", "accelerate", "chain", "default_tree"]
__version__ = "0.1.0"
