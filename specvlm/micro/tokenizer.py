"""Word-level tokenizer for the micro video-LLM pair (no download: built from clips.WORDS).

``build_tokenizer()`` returns a ``transformers.PreTrainedTokenizerFast`` around a ``tokenizers``
WordLevel model with a Whitespace pre-tokenizer (``\\w+|[^\\w\\s]+``, so "colour?" is
"colour", "?").  Ids:

    0 <|endoftext|>  pad          3 <image>   LLaVA-OneVision image placeholder
    1 <|im_start|>   turn start   4 <video>   LLaVA-OneVision video placeholder
    2 <|im_end|>     eos          5 <unk>
    6 ...            clips.WORDS in order

All six are special (``skip_special_tokens`` drops them; they are matched whole before
pre-tokenization, so ``"<video><video>"`` is two tokens, as the processor's expansion needs).
Decoding joins words with single spaces, so ``decode(encode(s)) == s`` for text written as
clips.py writes it.  The chat template (also given to the processor) renders

    <|im_start|>user <video> what colour is the square ? <|im_end|> <|im_start|>assistant

for ``[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "..."}]}]``
with ``add_generation_prompt=True``; an assistant turn is followed by `` <|im_end|> ``.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from specvlm.micro.clips import WORDS

PAD_TOKEN = "<|endoftext|>"
IM_START_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START_TOKEN, EOS_TOKEN, IMAGE_TOKEN, VIDEO_TOKEN, UNK_TOKEN)
PAD_ID, IM_START_ID, EOS_ID, IMAGE_ID, VIDEO_ID, UNK_ID = range(len(SPECIAL_TOKENS))

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}{{ '<video> ' }}"
    "{% elif item['type'] == 'image' %}{{ '<image> ' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] + ' ' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|> ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant ' }}{% endif %}"
)


def vocabulary() -> dict[str, int]:
    """token -> id: the special tokens, then clips.WORDS."""
    tokens = list(SPECIAL_TOKENS) + [w for w in WORDS if w not in SPECIAL_TOKENS]
    return {t: i for i, t in enumerate(tokens)}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The micro tokenizer (deterministic; vocab size len(SPECIAL_TOKENS) + len(WORDS))."""
    core = Tokenizer(models.WordLevel(vocab=vocabulary(), unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        additional_special_tokens=[IM_START_TOKEN, IMAGE_TOKEN, VIDEO_TOKEN],
        model_max_length=1024,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    assert tok.convert_tokens_to_ids(VIDEO_TOKEN) == VIDEO_ID
    assert tok.pad_token_id == PAD_ID and tok.eos_token_id == EOS_ID
    return tok
