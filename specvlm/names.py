"""The names the command line and the vLLM options check, without importing torch.

A wrong ``--selector`` or an unsupported checkpoint is refused before torch loads (about a
second, more on a busy machine): these names are kept here, in a module that imports nothing.
The library takes them from here (``specvlm.selectors.NAMES``, the families' display names);
tests/test_cli_light.py checks that they list exactly what it defines.
"""

# the built-in selectors of specvlm.selectors, in its order
SELECTORS = ("two_stage", "attention", "uniform", "random", "similarity", "semantic")
# those that read the draft's video features (the vLLM plugin does not compute them)
FEATURE_SELECTORS = ("similarity", "semantic")

# model_type -> display name of every family in specvlm.families.FAMILIES, in its order
FAMILIES = {
    "llava_onevision": "LLaVA-OneVision",
    "qwen2_5_vl": "Qwen2.5-VL",
    "qwen3_vl": "Qwen3-VL",
}
