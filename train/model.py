"""VideoLLM: a Hugging Face causal LM plus a projector (Linear, or LLaVA-1.5's two-layer MLP); video features replace the `<video>` sentinel.

Reference §4.1-4.2: each sample's VIDEO_TOKEN_INDEX position becomes its N projected feature rows (100 for a video,
1 for an image) in `inputs_embeds`; labels there are IGNORE_INDEX; sequences are re-padded on the right.
`load_llm` loads a hub name or a local folder and picks the attention implementation (`tiny-random` is built by
train.tiny; checkpoints are read by train.checkpoint, which sits above this module).
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from pipeline.contract.conversation import IGNORE_INDEX, VIDEO_TOKEN_INDEX

log = logging.getLogger(__name__)

DEFAULT_LLM = "lmsys/vicuna-7b-v1.5"


def attention_implementation(requested: str = "auto") -> str:
    """`flash_attention_2` when flash-attn is importable and a CUDA GPU of capability >= 8 exists, else SDPA."""
    if requested not in ("auto", "sdpa", "eager", "flash_attention_2"):
        raise ValueError(f"unknown attention implementation {requested!r}")
    if requested in ("sdpa", "eager"):
        return requested
    reason = None
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        reason = "flash-attn is not installed"
    if reason is None and not torch.cuda.is_available():
        reason = "no CUDA GPU is available"
    if reason is None and torch.cuda.get_device_capability()[0] < 8:
        reason = f"the GPU has compute capability {torch.cuda.get_device_capability()} (< 8.0)"
    if reason is None:
        return "flash_attention_2"
    if requested == "flash_attention_2":
        raise RuntimeError(f"flash_attention_2 was requested but {reason}; use --attn sdpa")
    # On a GPU the user likely wanted flash attention, so say it louder there.
    (log.warning if torch.cuda.is_available() else log.info)("attention: using PyTorch SDPA because %s", reason)
    return "sdpa"


def load_llm(name_or_path: str, dtype: torch.dtype | None = None, attn: str = "auto"):
    """Load a causal LM and its tokenizer from a hub name or a local folder (right padding, a pad token set)."""
    from train.llm_source import require_loadable

    require_loadable(name_or_path)  # before transformers is imported: a hub no one can reach is said in seconds
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.chatglm import is_chatglm3, load_chatglm3

    if is_chatglm3(name_or_path):  # converted to transformers' GLM on load; its downloaded code never runs
        llm, tokenizer = load_chatglm3(name_or_path, dtype, attention_implementation(attn))
        return llm, prepare_tokenizer(tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    llm = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype,
                                               attn_implementation=attention_implementation(attn))
    return llm, prepare_tokenizer(tokenizer)


def hidden_size(llm: nn.Module) -> int:
    """Width of the LLM's token embeddings, read from the module (a ZeRO-3-partitioned weight has no shape)."""
    return llm.get_input_embeddings().embedding_dim


def prepare_tokenizer(tokenizer):
    """Right padding; pad = unk when there is no pad token (VTimeLLM's choice for Vicuna), else eos."""
    from pipeline.contract.conversation import prepends_every_chunk

    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    # Detected once here; the conversation formats then give a legacy Llama tokenizer Metaspace ids (issue 13 item 6).
    log.info("tokenizer kind: %s", "legacy (prefix on every chunk)" if prepends_every_chunk(tokenizer) else "standard")
    return tokenizer


PROJECTORS = ("linear", "mlp2x_gelu")
"""`linear` (VTimeLLM: one Linear with bias) or `mlp2x_gelu` (LLaVA-1.5: Linear → GELU → Linear)."""


class MlpProjector(nn.Sequential):
    """LLaVA-1.5's `mlp2x_gelu`: Linear(D → H), GELU, Linear(H → H). Its state dict keys are `0.*` and `2.*`, as in
    LLaVA's `mm_projector`; `in_features`, `out_features` and `weight` answer as a Linear's do for VideoLLM."""

    def __init__(self, feature_dim: int, hidden: int):
        super().__init__(nn.Linear(feature_dim, hidden, bias=True), nn.GELU(), nn.Linear(hidden, hidden, bias=True))

    @property
    def in_features(self) -> int:
        return self[0].in_features

    @property
    def out_features(self) -> int:
        return self[2].out_features

    @property
    def weight(self) -> torch.Tensor:
        """The first layer's weight: where the projector's device and dtype are read."""
        return self[0].weight


def projector_kind(projector: nn.Module) -> str:
    """The name a projector module is recorded under (vtl_checkpoint.json `projector_type`)."""
    return "mlp2x_gelu" if isinstance(projector, MlpProjector) else "linear"


def new_projector(feature_dim: int, hidden: int, seed: int | None = 0, kind: str = "linear") -> nn.Module:
    """A fresh projector of `kind` (PROJECTORS), default nn.Linear init from a fixed seed; `linear` draws exactly as
    before (one Linear(feature_dim -> hidden) with bias)."""
    if kind not in PROJECTORS:
        raise ValueError(f"projector must be one of {', '.join(PROJECTORS)}, got {kind!r}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return nn.Linear(feature_dim, hidden, bias=True) if kind == "linear" else MlpProjector(feature_dim, hidden)


class VideoLLM(nn.Module):
    """LLM + projector. `conv_format` names the conversation format the model is trained/prompted with."""

    def __init__(self, llm: nn.Module, tokenizer, projector: nn.Linear, conv_format: str = "v1"):
        super().__init__()
        self.llm = llm
        self.projector = projector
        self.tokenizer = tokenizer
        self.conv_format = conv_format
        hidden = hidden_size(llm)
        if projector.out_features != hidden:
            raise ValueError(f"projector outputs {projector.out_features} but the LLM hidden size is {hidden}")
        # Filled by train.stages: what the LLM was built from, so checkpoints can record it.
        self.provenance: dict = {}
        # --pack: forward packs the micro-batch into one sequence (train.packing) instead of padding it.
        self.pack = False

    @property
    def feature_dim(self) -> int:
        return self.projector.in_features

    def _embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids.clamp(min=0))

    def _splice(self, ids: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor | None):
        """One sequence: text embeddings with the video sentinel replaced by `rows` (and labels IGNORE there)."""
        where = (ids == VIDEO_TOKEN_INDEX).nonzero().flatten()
        text = self._embed_text(ids)
        if len(where) == 0:
            return text, labels
        if len(where) > 1:
            raise ValueError(f"a sequence has {len(where)} video sentinels; exactly one is supported")
        p = int(where[0])
        rows = rows.to(text.dtype)
        emb = torch.cat([text[:p], rows, text[p + 1:]])
        if labels is not None:
            ignore = labels.new_full((rows.shape[0],), IGNORE_INDEX)
            labels = torch.cat([labels[:p], ignore, labels[p + 1:]])
        return emb, labels

    def embed(self, input_ids: list[int], features: torch.Tensor) -> torch.Tensor:
        """inputs_embeds (L', hidden) for one sequence; used by batched generation (left padding done by the caller)."""
        device = self.projector.weight.device
        ids = torch.as_tensor(input_ids, device=device)
        rows = self.projector(features.to(device=device, dtype=self.projector.weight.dtype))
        return self._splice(ids, rows, None)[0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                features: torch.Tensor | None = None, num_features: torch.Tensor | None = None):
        """Right-padded batch in, transformers CausalLMOutput out (loss when labels are given)."""
        if features is None or num_features is None:
            raise ValueError("VideoLLM.forward needs features (B, Nmax, D) and num_features (B,)")
        if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
            raise ValueError("VideoLLM.forward takes right-padded batches (use embed() for left-padded generation)")
        projected = self.projector(features.to(self.projector.weight.dtype))
        lengths = attention_mask.sum(dim=1).tolist()
        embs, labs = [], []
        for b, n in enumerate(lengths):
            lab = None if labels is None else labels[b, :n]
            emb, lab = self._splice(input_ids[b, :n], projected[b, :int(num_features[b])], lab)
            embs.append(emb)
            labs.append(lab)
        if self.pack:
            from train.packing import packed_inputs

            implementation = self.llm.config._attn_implementation
            return self.llm(**packed_inputs(embs, None if labels is None else labs, implementation))
        width = max(e.shape[0] for e in embs)
        inputs = embs[0].new_zeros((len(embs), width, embs[0].shape[1]))
        mask = attention_mask.new_zeros((len(embs), width))
        out_labels = None if labels is None else labels.new_full((len(embs), width), IGNORE_INDEX)
        for b, emb in enumerate(embs):
            inputs[b, :emb.shape[0]] = emb
            mask[b, :emb.shape[0]] = 1
            if out_labels is not None:
                out_labels[b, :emb.shape[0]] = labs[b]
        return self.llm(inputs_embeds=inputs, attention_mask=mask, labels=out_labels, use_cache=False)

    def enable_gradient_checkpointing(self) -> None:
        """Non-reentrant checkpointing; works with a frozen LLM because the projected rows carry gradients."""
        self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(self.llm, "enable_input_require_grads"):
            self.llm.enable_input_require_grads()

