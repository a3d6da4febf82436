"""Label masks for any chat template: where each assistant reply lies in a conversation's rendering.

The reply of assistant message i is what rendering messages[:i+1] adds to the generation prompt of messages[:i]
(without trailing whitespace: Qwen's "\\n" after <|im_end|> belongs to the next turn's prompt). A prefix-stable
template (LLaMA-3.1, Mistral, Vicuna-like ones) has it right after that prompt inside the whole rendering, which gives
the masks that rendering growing prefixes gave. A template that rewrites earlier turns (Qwen3 drops their <think>
blocks once a later user message exists) has it further on, and it is located there, after the history that precedes
it. A template that renders an answer differently inside a longer conversation gets one clear error.
"""
from __future__ import annotations


def _render(tokenizer, messages: list[dict], generation: bool) -> str:
    # Templates with a thinking switch (Qwen3) render in non-thinking mode: vtl trains answers without reasoning, and
    # the empty <think> block Qwen3 writes before the last answer then belongs to the prompt, as at generation.
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation,
                                         enable_thinking=False)


def _reply_span(tokenizer, messages: list[dict], i: int, rendered: str, start: int) -> tuple[int, int]:
    """Where assistant message `i`'s reply (its text and end-of-turn, without trailing whitespace) lies in `rendered`,
    searching from `start` (the end of the history before it).

    The reply is what rendering messages[:i+1] adds to the generation prompt for messages[:i]. A prefix-stable
    template has it right after that prompt inside `rendered`; a template that rewrites earlier turns (Qwen3 drops
    their <think> blocks) has it further on, and it is located there."""
    prompt = _render(tokenizer, messages[:i], True)
    full = _render(tokenizer, messages[:i + 1], False)
    if not full.startswith(prompt):
        raise ValueError("the chat template's rendering of an answered turn does not extend its generation prompt; "
                         "its label mask cannot be derived")
    reply = full[len(prompt):len(prompt) + _turn_length(tokenizer, messages[:i + 1], full, prompt)].rstrip()
    if not reply:
        raise ValueError("the chat template renders an assistant turn as nothing")
    if rendered.startswith(prompt) and rendered.startswith(reply, len(prompt)) and len(prompt) >= start:
        return len(prompt), len(prompt) + len(reply)
    at = rendered.find(reply, start)
    if at < 0:
        raise ValueError("the chat template renders an assistant turn differently inside a longer conversation; "
                         "its label mask cannot be derived")
    return at, at + len(reply)


def _turn_length(tokenizer, messages: list[dict], full: str, prompt: str) -> int:
    """How much of what `full` adds after `prompt` is the turn itself: a template that closes a finished
    conversation with special tokens of its own (Phi-3 appends EOS after the last `<|end|>`) drops them once a user
    turn follows, so the turn ends where the rendering with one more user message departs from `full`, when only
    special tokens and whitespace are left after it. Otherwise (no closing, or a template that rewrites the turn once
    another follows, such as Qwen3's <think> block) the turn is the whole addition."""
    whole = len(full) - len(prompt)
    try:
        more = _render(tokenizer, [*messages, {"role": "user", "content": "x"}], False)
    except Exception:  # a template that refuses the extra turn: nothing to learn from it
        return whole
    shared = next((k for k, (a, b) in enumerate(zip(full, more)) if a != b), min(len(full), len(more)))
    specials = sorted(tokenizer.get_added_vocab(), key=len, reverse=True)
    for t in specials:  # never cut inside a special token ("<|user|>" and "<|endoftext|>" share "<|")
        shared = min([shared] + [k for k in range(max(0, shared - len(t) + 1), shared) if full.startswith(t, k)])
    tail = full[shared:]
    for t in specials:
        tail = tail.replace(t, "")
    return shared - len(prompt) if shared > len(prompt) and not tail.strip() else whole


def rendered_pieces(tokenizer, messages: list[dict], for_generation: bool) -> list[tuple[str, bool]]:
    """The whole conversation rendered once, as (text, supervised) pieces in order: each assistant reply (answer and
    end-of-turn) is supervised; system text, user turns, role headers, whitespace between turns and an empty <think>
    block are not. With `for_generation` the rendering ends with the template's generation prompt."""
    rendered = _render(tokenizer, messages, for_generation)
    segs, done = [], 0
    for i, msg in enumerate(messages):
        if msg["role"] == "user":
            continue
        # The history before this reply: earlier turns are rendered as in `rendered` (templates rewrite only turns
        # after the last user message), so the reply lies beyond it.
        history = _render(tokenizer, messages[:i], False)
        start = len(history) if rendered.startswith(history) else done
        begin, end = _reply_span(tokenizer, messages, i, rendered, max(start, done))
        segs += [(rendered[done:begin], False), (rendered[begin:end], True)]
        done = end
    if rendered[done:]:
        segs.append((rendered[done:], False))
    return segs
