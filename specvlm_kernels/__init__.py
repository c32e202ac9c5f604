"""Fused Triton kernels for SpecVLM, each with a plain-PyTorch reference.

Public ops (CUDA tensors run compiled Triton; CPU tensors run Triton under the interpreter when
``TRITON_INTERPRET=1``, else the reference in :mod:`specvlm_kernels.reference`):

* :func:`video_attention_scores`: text-to-video attention mass per video token (one prefill layer).
* :func:`select_video_tokens` / :func:`prune_video_tokens`: two-stage video-token selection.
* :func:`tree_attention`: attention of draft-tree nodes over a shared prefix (split-K decode).
"""

from specvlm_kernels._dispatch import backend_for
from specvlm_kernels.attention_scores import video_attention_scores
from specvlm_kernels.token_select import prune_video_tokens, select_video_tokens
from specvlm_kernels.tree_attention import tree_attention

__all__ = [
    "backend_for",
    "prune_video_tokens",
    "select_video_tokens",
    "tree_attention",
    "video_attention_scores",
]
__version__ = "0.1.0"
