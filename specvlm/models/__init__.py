"""lmms-eval's plugin entry to SpecVLM's model (``specvlm.eval.lmms_model``).

lmms-eval finds the ``specvlm`` model in two ways, both served from here:

* the ``lmms_eval.models`` entry point of this package (:func:`manifest`), with no setting;
* ``LMMS_EVAL_PLUGINS=specvlm``, with which lmms-eval imports this module, reads
  :data:`AVAILABLE_MODELS` (model name -> class name) and loads the class from
  ``specvlm.models.<model name>``.

Nothing here imports lmms-eval or torch until lmms-eval asks for the model.
"""

AVAILABLE_MODELS = {"specvlm": "SpecVLM"}


def manifest():
    """The model's manifest for lmms-eval's ``lmms_eval.models`` entry point group."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="specvlm", simple_class_path="specvlm.models.specvlm.SpecVLM")
