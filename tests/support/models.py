"""Helpers for the model/conversation/stage/checkpoint tests: texts, a slow (pure-Python) tokenizer, configs."""
from __future__ import annotations

import string
import types

from transformers import PreTrainedTokenizer

TEXTS = [
    "a man walks a dog near the river",
    "From 12 to 40, a cat jumps over the fence.",
    "During which frames can we see a cat jumping?",
    "Could you please detail the events that took place during different time segments in the video?",
    "From 00 to 45, a woman cooks pasta. From 46 to 99, she eats it.",
    "What happens after the dog stops?",
]

V1_TURNS = [
    {"from": "human", "value": "<video>\nCould you please detail the events in the video?"},
    {"from": "gpt", "value": "From 00 to 45, a woman cooks pasta. From 46 to 99, she eats it."},
    {"from": "human", "value": "During which frames can we see a cat jumping?"},
    {"from": "gpt", "value": "From 12 to 40."},
]
PLAIN_TURNS = [{"from": "human", "value": "<video>\n"}, {"from": "gpt", "value": "a man walks a dog near the river"}]


class PieceTokenizer(PreTrainedTokenizer):
    """A slow tokenizer that handles whitespace like SentencePiece (LLaMA's slow tokenizer): a "▁" dummy prefix,
    spaces as "▁", greedy longest match over word pieces ("▁word") and single characters."""

    vocab_files_names: dict = {}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, words: list[str] | None = None, **kwargs):
        specials = ["<unk>", "<s>", "</s>", "<pad>", "<video>", "<image>"]
        pieces = specials + list(string.printable) + ["\u2581"] + sorted({"\u2581" + w for w in words or []})
        self.vocab = {p: i for i, p in enumerate(dict.fromkeys(pieces))}
        self.inv = {i: p for p, i in self.vocab.items()}
        self.max_len = max(len(p) for p in self.vocab)
        super().__init__(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict:
        return dict(self.vocab)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        text = text.replace(" ", "\u2581")
        if not text.startswith("\u2581"):
            text = "\u2581" + text
        out, i = [], 0
        while i < len(text):
            for j in range(min(len(text), i + self.max_len), i, -1):
                if text[i:j] in self.vocab:
                    out.append(text[i:j])
                    i = j
                    break
            else:
                out.append("<unk>")
                i += 1
        return out

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.get(token, self.vocab["<unk>"])

    def _convert_id_to_token(self, index: int) -> str:
        return self.inv.get(index, "<unk>")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens).replace("\u2581", " ").removeprefix(" ")


def slow_tokenizer() -> PieceTokenizer:
    words = sorted({w for t in TEXTS for w in t.split()} | {"USER:", "ASSISTANT:", "A", "chat", "between"})
    return PieceTokenizer(words)


def stage_cfg(stage: int, out, frm=None, **kw):
    """A TrainConfig-like namespace with small LoRA settings (the prepare functions read attributes only)."""
    base = dict(stage=stage, llm="tiny-random", from_checkpoint=str(frm) if frm else None, out=str(out), shards=None,
                conv_format=None, lora_r=8, lora_alpha=16, lora_dropout=0.0, seed=0, attn="auto", resume=False)
    return types.SimpleNamespace(**{**base, **kw})


def batch(encoded_list, features, pad_id: int = 0):
    """Right-padded tensors for VideoLLM.forward from Encoded samples and a list of (N_i, D) feature tensors."""
    import torch

    width = max(len(e) for e in encoded_list)
    n = len(encoded_list)
    ids = torch.full((n, width), pad_id)
    labels = torch.full((n, width), -100)
    mask = torch.zeros((n, width), dtype=torch.long)
    for b, e in enumerate(encoded_list):
        ids[b, :len(e)] = torch.tensor(e.input_ids)
        labels[b, :len(e)] = torch.tensor(e.labels)
        mask[b, :len(e)] = 1
    nmax = max(f.shape[0] for f in features)
    feats = torch.zeros((n, nmax, features[0].shape[1]))
    for b, f in enumerate(features):
        feats[b, :f.shape[0]] = f
    return ids, mask, labels, feats, torch.tensor([f.shape[0] for f in features])
