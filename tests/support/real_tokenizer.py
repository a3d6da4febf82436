"""The real LLaMA-2 / Vicuna tokenizer (shared/data/tokenizers/llama2-vicuna, see its README), in both kinds a user
can get from that folder: Metaspace "prepend first" (what transformers 5 builds) and legacy (a `Prepend("▁")`
normalizer, what transformers 4.x loads from the same tokenizer.json). Both are built explicitly from the folder's
vocabulary and merges, so the tests do not depend on which transformers version is installed."""
from __future__ import annotations

import os
from pathlib import Path


def _find() -> Path:
    candidates = [os.environ.get("VTL_REAL_TOKENIZERS"),
                  Path(__file__).resolve().parents[3] / "shared" / "data" / "tokenizers", "/work/shared/data/tokenizers"]
    for c in candidates:
        if c and (Path(c) / "llama2-vicuna" / "tokenizer.json").is_file():
            return Path(c) / "llama2-vicuna"
    raise FileNotFoundError("real tokenizers not found: set VTL_REAL_TOKENIZERS to the folder of shared/data/tokenizers")


VICUNA_DIR = _find()
KINDS = ("metaspace", "legacy")


def vicuna_tokenizer(kind: str = "metaspace"):
    """The Vicuna tokenizer of the given kind, with pad = unk as the trainer sets it (train.model.prepare_tokenizer)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_file(str(VICUNA_DIR / "tokenizer.json"))
    if kind == "metaspace":
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    elif kind == "legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        tok.pre_tokenizer = None
    else:
        raise ValueError(f"kind must be one of {KINDS}")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>", padding_side="right", model_max_length=2048)
