"""Conversation formats and label masks: turns -> (input_ids, labels) for training, prompt ids for generation.

One module owns the prompt formats (reference §4.3, §8):

- `plain` (stage 1): BOS + `<video>` + "\\n" masked, caption + "\\n" supervised, no EOS. The human turn's text is
  replaced by `<video>\\n`, as VTimeLLM does.
- `v1` (Vicuna v1.1, stages 2-3): system + " USER: " + q1 + " ASSISTANT: " + a1 + "</s>" + "USER: " + q2 ...;
  loss only on each answer and its "</s>".
- `chatglm3`: `[gMASK] sop`, then per turn a role token immediately followed by the turn's tokens, then EOS; the
  tokens after each `<|assistant|>` role token up to and including the next role token (or EOS) are supervised.
- `chat_template`: any HF causal LM through its tokenizer's chat template; each assistant reply (answer and
  end-of-turn) is located in the conversation's rendering (pipeline.contract.chat_template).

Masks are computed segment by segment: every piece of the prompt is tokenized on its own and marked supervised or
not, so no "-2" length arithmetic depends on how a tokenizer merges across boundaries. Boundaries sit right before
the space that opens an answer (" " + answer), which SentencePiece/Metaspace tokenizers attach to the answer's first
word, so the supervised ids are the ones the full prompt would contain. `encode` never truncates: the caller counts
and reports over-long samples (build-qa's token budget counts with `encode` too, so both agree).

The turn rules every part checks with (`turns_problem`), the `<video>` literal and the first turn that carries it
(`video_turn`) are pipeline.contract.turns, re-exported here. The `conversation.json` record around the turns is
pipeline.contract.record; the evaluation queries are pipeline.contract.queries.

Two tokenizer details follow VTimeLLM exactly (issue 13):
- `plain` tokenizes "\\n" + caption + "\\n" as one chunk, as VTimeLLM does (the text after `<video>`), and masks the
  first tokens that "\\n" alone gives; so the caption's first word has no "▁" of its own ("A", not "▁A").
- Llama tokenizers come in two kinds: Metaspace "prepend first" (transformers 5, or `legacy: false` conversions) adds
  the "▁" word prefix only when a chunk does not start with a space; a legacy one (the same folder under transformers
  4.x, whose tokenizer.json carries a `Prepend("▁")` normalizer) adds it to every chunk, so " answer" would become
  "▁" + "▁answer". `prepends_every_chunk` detects the kind once per tokenizer, and for a legacy one a chunk that
  starts with a space is tokenized without it: both kinds then give the same ids.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.contract.turns import (  # noqa: F401  (re-exported: the conversation contract's callers take them here)
    VIDEO_PLACEHOLDER,
    check_turns,
    turns_problem,
    video_turn,
)

VIDEO_TOKEN_INDEX = -200
IGNORE_INDEX = -100
FORMATS = ("plain", "v1", "chatglm3", "chat_template")
V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
             "The assistant gives helpful, detailed, and polite answers to the user's questions.")
CHATGLM_PREFIX = ("[gMASK]", "sop")
CHATGLM_ROLES = {"human": "<|user|>", "gpt": "<|assistant|>"}


@dataclass(frozen=True)
class Encoded:
    """Token ids with one VIDEO_TOKEN_INDEX sentinel, and labels (IGNORE_INDEX where no loss is taken)."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class _Seg:
    """A prompt piece: `text` to tokenize (may contain `<video>`) or literal `ids`; `supervised` marks loss."""

    text: str = ""
    ids: tuple[int, ...] = ()
    supervised: bool = False
    masked_head: str = ""
    """`text` starts with this; as many leading tokens as it gives alone stay unsupervised (VTimeLLM's plain mask)."""


class _Specials:
    """A tokenizer's special-token ids, each looked up once per encode call: transformers resolves `eos_token_id`
    and the like from the token string on every access (~10 µs), which adds up over a batch of conversations."""

    def __init__(self, tokenizer):
        self.tokenizer, self._memo = tokenizer, {}

    def _get(self, name: str, lookup):
        if name not in self._memo:
            self._memo[name] = lookup()
        return self._memo[name]

    def bos(self) -> tuple[int, ...]:
        bos = self._get("<bos>", lambda: self.tokenizer.bos_token_id)
        return () if bos is None else (bos,)

    def eos(self) -> tuple[int, ...]:
        eos = self._get("<eos>", lambda: self.tokenizer.eos_token_id)
        if eos is None:
            raise ValueError("tokenizer has no EOS token; the v1 and chatglm3 formats need one")
        return (eos,)

    def special(self, token: str) -> int:
        tid, unk = self._get(token, lambda: (self.tokenizer.convert_tokens_to_ids(token), self.tokenizer.unk_token_id))
        if tid is None or tid == unk:
            raise ValueError(f"tokenizer has no token {token!r} (needed by this conversation format)")
        return tid


def _plain(turns: list[dict], tokenizer, for_generation: bool, sp: _Specials) -> list[_Seg]:
    if len(turns) != (1 if for_generation else 2):
        raise ValueError("the plain format takes exactly one human turn and one gpt turn (caption)")
    if for_generation:
        return [_Seg(ids=sp.bos()), _Seg(text=VIDEO_PLACEHOLDER + "\n")]
    # VTimeLLM tokenizes everything after <video> as one chunk and masks len(tokens of "<video>\n").
    return [_Seg(ids=sp.bos()), _Seg(text=VIDEO_PLACEHOLDER),
            _Seg(text="\n" + turns[1]["value"] + "\n", supervised=True, masked_head="\n")]


def _v1(turns: list[dict], tokenizer, for_generation: bool, sp: _Specials) -> list[_Seg]:
    segs = [_Seg(ids=sp.bos())]
    prefix, eos = V1_SYSTEM + " ", sp.eos()
    for i in range(0, len(turns), 2):
        # The masked part ends at "ASSISTANT:"; the answer starts with its separating space (see module docstring).
        segs.append(_Seg(text=prefix + "USER: " + turns[i]["value"] + " ASSISTANT:"))
        if i + 1 < len(turns):
            segs.append(_Seg(text=" " + turns[i + 1]["value"], supervised=True))
            segs.append(_Seg(ids=eos, supervised=True))
        prefix = ""
    return segs


def _chatglm3(turns: list[dict], tokenizer, for_generation: bool, sp: _Specials) -> list[_Seg]:
    segs = [_Seg(ids=tuple(sp.special(t) for t in CHATGLM_PREFIX))]
    role_ids = {k: sp.special(v) for k, v in CHATGLM_ROLES.items()}
    for turn in turns:
        # Reference §8: the loss mask is shifted right by one, so the role token that ends an answer (next <|user|>)
        # or the final EOS is supervised, and the <|assistant|> token itself is not.
        after_answer = turn["from"] == "human" and len(segs) > 1
        segs.append(_Seg(ids=(role_ids[turn["from"]],), supervised=after_answer))
        segs.append(_Seg(text=turn["value"], supervised=turn["from"] == "gpt"))
    if for_generation:
        segs.append(_Seg(ids=(role_ids["gpt"],)))
    else:
        segs.append(_Seg(ids=sp.eos(), supervised=True))
    return segs


def _chat_template(turns: list[dict], tokenizer, for_generation: bool, sp: _Specials) -> list[_Seg]:
    from pipeline.contract.chat_template import rendered_pieces

    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("format 'chat_template' needs a tokenizer with a chat template")
    messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in turns]
    return [_Seg(text=text, supervised=supervised) for text, supervised in
            rendered_pieces(tokenizer, messages, for_generation)]


_BUILDERS = {"plain": _plain, "v1": _v1, "chatglm3": _chatglm3, "chat_template": _chat_template}


def _build(turns: list[dict], tokenizer, fmt: str, for_generation: bool, sp: _Specials | None = None) -> list[_Seg]:
    if fmt not in _BUILDERS:
        raise ValueError(f"unknown conversation format {fmt!r}; choose one of {FORMATS}")
    check_turns(turns, "human" if for_generation else "gpt")
    return _BUILDERS[fmt](turns, tokenizer, for_generation, sp or _Specials(tokenizer))


def prepends_every_chunk(tokenizer) -> bool:
    """True for a legacy SentencePiece-style tokenizer, which adds its "▁" word prefix even to text that starts with a
    space (" a" → "▁", "▁a"); False for a Metaspace "prepend first" one (" a" and "a" → "▁a") and for tokenizers
    without such a prefix (GPT-2 style). Probed once and remembered on the tokenizer."""
    known = getattr(tokenizer, "_vtl_prepends_every_chunk", None)
    if known is None:
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        spaced = tokenizer(" a", add_special_tokens=False)["input_ids"]
        known = bool(plain) and spaced != plain and spaced[-len(plain):] == plain \
            and str(tokenizer.convert_ids_to_tokens(plain[0])).startswith("\u2581")
        try:
            tokenizer._vtl_prepends_every_chunk = known
        except AttributeError:  # a tokenizer that refuses new attributes is probed again next time
            pass
    return known


def _chunk_text(chunk: str, legacy: bool) -> str:
    """The text to hand the tokenizer for `chunk` so that both tokenizer kinds give Metaspace "prepend first" ids."""
    return chunk[1:] if legacy and chunk.startswith(" ") and len(chunk) > 1 else chunk


def _seg_pieces(seg: _Seg, ids_of) -> list[tuple[list[int], bool]]:
    """A segment as (ids, supervised) pieces: one, or two when its head is masked."""
    ids = _seg_ids(seg, ids_of)
    if not seg.masked_head:
        return [(ids, seg.supervised)]
    head = len(ids_of(seg.masked_head))
    return [(ids[:head], False), (ids[head:], seg.supervised)]


def _seg_ids(seg: _Seg, ids_of) -> list[int]:
    """A piece's ids: its literal ids, or its text tokenized chunk by chunk around `<video>` by `ids_of(chunk)`."""
    if seg.ids:
        return list(seg.ids)
    ids: list[int] = []
    for j, chunk in enumerate(seg.text.split(VIDEO_PLACEHOLDER)):
        if j:
            ids.append(VIDEO_TOKEN_INDEX)
        if chunk:
            ids += ids_of(chunk)
    if seg.supervised and VIDEO_TOKEN_INDEX in ids:
        raise ValueError(f"{VIDEO_PLACEHOLDER} may not appear in an answer")
    return ids


def _join(pieces: list[tuple[list[int], bool]]) -> Encoded:
    input_ids: list[int] = []
    labels: list[int] = []
    for ids, supervised in pieces:
        input_ids += ids
        labels += ids if supervised else [IGNORE_INDEX] * len(ids)
    return Encoded(input_ids, labels)


def segments(turns: list[dict], tokenizer, fmt: str, for_generation: bool = False) -> list[tuple[list[int], bool]]:
    """The prompt as (ids, supervised) pieces, in order; exposed so tests can compare pieces with full prompts."""
    legacy = prepends_every_chunk(tokenizer)

    def ids_of(text: str) -> list[int]:
        return tokenizer(_chunk_text(text, legacy), add_special_tokens=False)["input_ids"]

    return [p for seg in _build(turns, tokenizer, fmt, for_generation) for p in _seg_pieces(seg, ids_of)]


def encode(turns: list[dict], tokenizer, fmt: str) -> Encoded:
    """Training ids and labels for one conversation (never truncated). The reference for `encode_many`."""
    return _join(segments(turns, tokenizer, fmt))


def encode_many(conversations: list[list[dict]], tokenizer, fmt: str) -> list[Encoded]:
    """`encode` for many conversations with one tokenizer call: the same pieces, each distinct text tokenized once.

    The constant pieces (system prompt, role separators) then cost one tokenization per call instead of one per
    sample, and a fast tokenizer encodes the whole list in one pass of its Rust backend. The result equals
    `[encode(c, tokenizer, fmt) for c in conversations]` (tests check this for every format).
    """
    sp = _Specials(tokenizer)
    built = [_build(turns, tokenizer, fmt, False, sp) for turns in conversations]
    texts = list(dict.fromkeys([chunk for segs in built for seg in segs if not seg.ids
                                for chunk in seg.text.split(VIDEO_PLACEHOLDER) if chunk]
                               + [seg.masked_head for segs in built for seg in segs if seg.masked_head]))
    legacy = prepends_every_chunk(tokenizer)
    table = dict(zip(texts, _tokenize_batch(tokenizer, [_chunk_text(t, legacy) for t in texts]))) if texts else {}
    return [_join([p for seg in segs for p in _seg_pieces(seg, table.__getitem__)]) for segs in built]


def _tokenize_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """ids of each text without special tokens, as `tokenizer(text, add_special_tokens=False)` gives them.

    A fast tokenizer's Rust backend is called directly when nothing the transformers wrapper would configure first
    (truncation, padding, special-token splitting) is set on it: that skips building offsets and per-text
    dictionaries, about a third of the call. Any other tokenizer goes through its public batch call.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if (backend is not None and hasattr(backend, "encode_batch_fast") and backend.truncation is None
            and backend.padding is None
            and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))):
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                     return_token_type_ids=False)["input_ids"]


def generation_prompt(turns: list[dict], tokenizer, fmt: str) -> list[int]:
    """Prompt ids for inference: all turns so far (ending with a human turn), then the assistant prefix."""
    return [i for ids, _ in segments(turns, tokenizer, fmt, for_generation=True) for i in ids]


def supervised_spans(labels: list[int]) -> list[list[int]]:
    """The runs of supervised label ids, in order (one per answer for v1): handy for checking masks by decoding."""
    spans, run = [], []
    for label in labels:
        if label == IGNORE_INDEX:
            if run:
                spans.append(run)
            run = []
        else:
            run.append(label)
    if run:
        spans.append(run)
    return spans
