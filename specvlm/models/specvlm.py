"""The module lmms-eval loads the ``specvlm`` model from (``specvlm.models.specvlm.SpecVLM``)."""

from specvlm.eval.lmms_model import SpecVLM

__all__ = ["SpecVLM"]
