"""Micro video-LLM pair (LLaVA-OneVision target + draft) trained on procedural clips.

clips      procedural videos with exact facts, questions and answers (numpy only)
tokenizer  word-level tokenizer (tokenizers WordLevel in a PreTrainedTokenizerFast)
processor  stock LlavaOnevisionProcessor, usable without torchvision (see its FINDINGS)
model      target / draft LlavaOnevisionConfig builders and parameter counts
data       token-exact training conversations, batches, held-out evaluation examples

Training: scripts/train_micro.py.  Submodules are not imported here (transformers is heavy).
"""
