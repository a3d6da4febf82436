"""Which tokens end a generated answer, per conversation format: one rule for evaluation, chat and exported models.

EOS always; `<|user|>` in the chatglm3 format (VTimeLLM's GLM inference stops there: a ChatGLM3 model ends its turn
by opening the next user turn); in the chat_template format, the token the template closes an assistant turn with
(`<|im_end|>`, `<|eot_id|>`, Phi-3's `<|end|>`), read from the label mask itself.
"""
from __future__ import annotations

from pipeline.contract.conversation import IGNORE_INDEX, encode


def template_end_of_turn(tokenizer) -> int | None:
    """The token a chat template closes an assistant turn with: the last supervised token of a rendered reply (the
    label mask's own reading of the template), when it is a special or added token; None for a template that ends
    turns with ordinary text, whose answers end at EOS."""
    turns = [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "A man cooks."}]
    last = [t for t in encode(turns, tokenizer, "chat_template").labels if t != IGNORE_INDEX][-1]
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    return last if last in special else None


def answer_stop_ids(tokenizer, conv_format: str | None) -> list[int]:
    """Token ids that end a generated answer in `conv_format` (the module docstring's rule)."""
    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if conv_format == "chatglm3":
        stops.append(tokenizer.convert_tokens_to_ids("<|user|>"))
    end = template_end_of_turn(tokenizer) if conv_format == "chat_template" else None
    return stops + [end] if end is not None and end not in stops else stops
