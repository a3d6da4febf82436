"""ChatGLM3 as released (`model_type: "chatglm"`, custom modelling code) converted to transformers' native GLM, so no
downloaded code ever runs (issue 28).

The two are the same architecture: RMSNorm, SwiGLU (`dense_h_to_4h` holds gate then up, as `gate_up_proj` does),
multi-query attention with `multi_query_group_num` key/value groups, bias on q/k/v only, and rotary embeddings on the
first half of each head with interleaved pairs (GLM's `partial_rotary_factor` 0.5; base 10000 * `rope_ratio`). Only
the names differ, and ChatGLM fuses q, k and v into `query_key_value` ([q heads | k groups | v groups] along rows).

The tokenizer is ChatGLM3's SentencePiece `tokenizer.model` plus nine special tokens numbered after its vocabulary.
ChatGLM3's own tokenizer encodes text with SentencePiece alone and maps any piece whose text equals a special token's
name (a mid-word "sop", say) to that special token; the fast tokenizer built here has those names in its vocabulary at
the special ids, which reproduces both.

`load_chatglm3` converts in memory on load; `convert_chatglm3` writes a reusable folder (`vtl-import-weights
--convert-chatglm3`). `glm_adapter` renames a LoRA trained on ChatGLM3 (VTimeLLM's GLM releases) to the converted
model's modules: `query_key_value`'s LoRA B is split like the weight (its A is shared by q, k and v), so the merged
weights equal ChatGLM3's merged weights converted.

VTimeLLM puts LoRA on every nn.Linear but one named `lm_head`; ChatGLM3's output layer is `output_layer`, so its GLM
recipe trains a LoRA on the output layer too. After conversion that layer is `lm_head`, and `keeps_lm_head_lora`
says to keep it a LoRA target for GLM models (train.stages.lora_targets), as VTimeLLM's GLM recipe does.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

CHATGLM_SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
                          "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
_LAYER = re.compile(r"transformer\.encoder\.layers\.(\d+)\.(.+)")
_LAYER_NAMES = {"input_layernorm.weight": "input_layernorm.weight",
                "post_attention_layernorm.weight": "post_attention_layernorm.weight",
                "self_attention.dense.weight": "self_attn.o_proj.weight",
                "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
                "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight"}
_TOP_NAMES = {"transformer.embedding.word_embeddings.weight": "model.embed_tokens.weight",
              "transformer.encoder.final_layernorm.weight": "model.norm.weight",
              "transformer.output_layer.weight": "lm_head.weight"}


def is_chatglm3(name_or_path: str) -> bool:
    """True for a local folder whose config.json says `model_type: "chatglm"`."""
    config = Path(name_or_path) / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text()).get("model_type") == "chatglm"


def glm_config(chatglm: dict):
    """The GlmConfig of a ChatGLM3 config.json (a dict); refuses variants this conversion does not reproduce."""
    from transformers import GlmConfig

    unsupported = {"rmsnorm": True, "add_qkv_bias": True, "add_bias_linear": False, "post_layer_norm": True,
                   "apply_residual_connection_post_layernorm": False, "original_rope": True}
    for key, want in unsupported.items():
        if chatglm.get(key, want) != want:
            raise ValueError(f"ChatGLM config has {key}={chatglm[key]!r}; only {want!r} converts to transformers' GLM")
    heads = chatglm["num_attention_heads"]
    groups = chatglm["multi_query_group_num"] if chatglm.get("multi_query_attention") else heads
    head_dim = chatglm.get("kv_channels") or chatglm["hidden_size"] // heads
    return GlmConfig(
        vocab_size=chatglm["padded_vocab_size"], hidden_size=chatglm["hidden_size"],
        intermediate_size=chatglm["ffn_hidden_size"], num_hidden_layers=chatglm["num_layers"],
        num_attention_heads=heads, num_key_value_heads=groups, head_dim=head_dim,
        max_position_embeddings=chatglm.get("seq_length", 8192), rms_norm_eps=chatglm.get("layernorm_epsilon", 1e-5),
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0 * chatglm.get("rope_ratio", 1),
                         "partial_rotary_factor": 0.5},
        attention_bias=True, tie_word_embeddings=False, pad_token_id=chatglm.get("pad_token_id", 0),
        eos_token_id=chatglm.get("eos_token_id", 2), bos_token_id=chatglm.get("bos_token_id", 1),
        dtype=chatglm.get("torch_dtype"))


def glm_state_dict(weights: dict, config) -> dict:
    """ChatGLM3's weights under GLM's names; `query_key_value` split into q, k and v. Unknown names raise."""
    q_rows = config.num_attention_heads * config.head_dim
    kv_rows = config.num_key_value_heads * config.head_dim
    out = {}
    for name, tensor in weights.items():
        if name.endswith("rotary_pos_emb.inv_freq"):
            continue  # recomputed by GLM's rotary embedding
        if name in _TOP_NAMES:
            out[_TOP_NAMES[name]] = tensor
            continue
        match = _LAYER.fullmatch(name)
        if not match:
            raise ValueError(f"unexpected ChatGLM weight {name!r}")
        prefix, rest = f"model.layers.{match[1]}.", match[2]
        if rest.startswith("self_attention.query_key_value."):
            kind = rest.rsplit(".", 1)[1]
            q, k, v = tensor.split([q_rows, kv_rows, kv_rows], dim=0)
            for proj, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                out[f"{prefix}self_attn.{proj}.{kind}"] = part.contiguous()
        elif rest in _LAYER_NAMES:
            out[prefix + _LAYER_NAMES[rest]] = tensor
        else:
            raise ValueError(f"unexpected ChatGLM weight {name!r}")
    return out


def read_weights(folder: Path) -> dict:
    """All tensors of a released folder: *.safetensors, else *.bin read with `weights_only=True` (no pickle code)."""
    import torch
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder} has no *.safetensors or pytorch_model*.bin weights")
    weights: dict = {}
    for f in files:
        weights.update(load_file(f) if f.suffix == ".safetensors" else torch.load(f, map_location="cpu",
                                                                                    weights_only=True))
    return weights


def glm_model(folder: Path, dtype=None, attn: str = "sdpa"):
    """GlmForCausalLM with the folder's ChatGLM3 weights (built on the meta device, so no second copy in memory)."""
    import torch
    from transformers import GlmForCausalLM

    config = glm_config(json.loads((folder / "config.json").read_text()))
    config._attn_implementation = attn
    with torch.device("meta"):
        model = GlmForCausalLM(config)
    state = glm_state_dict(read_weights(folder), config)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"ChatGLM3 weights do not fit GLM: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # its inv_freq buffer was on meta
    return model.eval()


def glm_tokenizer(folder: Path):
    """A fast tokenizer with ChatGLM3's ids from the folder's SentencePiece tokenizer.model (see module docstring)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString((folder / "tokenizer.model").read_bytes())
    pieces = {p.piece: i for i, p in enumerate(proto.pieces)}
    built = json.loads(SpmConverter.build_tokenizer_from_spm_proto(proto, pieces, legacy=True).to_str())
    vocab = built["model"]["vocab"]
    for offset, name in enumerate(CHATGLM_SPECIAL_TOKENS):
        vocab[name] = len(proto.pieces) + offset  # replaces a SentencePiece piece of the same text, as ChatGLM3 does
    tok = Tokenizer.from_str(json.dumps(built))
    spec = proto.trainer_spec
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=spec.unk_piece, bos_token=spec.bos_piece, eos_token=spec.eos_piece,
        pad_token=spec.unk_piece, padding_side="right", model_max_length=8192)


def load_chatglm3(folder: str, dtype=None, attn: str = "sdpa"):
    """(GlmForCausalLM, fast tokenizer) from a ChatGLM3 folder as released; its code files are never imported."""
    return glm_model(Path(folder), dtype, attn), glm_tokenizer(Path(folder))


def convert_chatglm3(src: str, out: str) -> Path:
    """Write `src` (a ChatGLM3 folder as released) to `out` as a transformers GLM folder + fast tokenizer."""
    model, tok = load_chatglm3(src)
    dst = Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


_LORA_TARGETS = {"query_key_value": ("q_proj", "k_proj", "v_proj"), "dense": ("o_proj",),
                 "dense_h_to_4h": ("gate_up_proj",), "dense_4h_to_h": ("down_proj",), "output_layer": ("lm_head",)}
_PEFT_PREFIX = "base_model.model."


def is_chatglm_adapter(adapter_config: dict, state: dict) -> bool:
    """True for a LoRA trained on ChatGLM3's module names (VTimeLLM's GLM releases)."""
    targets = adapter_config.get("target_modules") or ()
    return "query_key_value" in targets or any(".encoder.layers." in k for k in state)


def glm_adapter(adapter_config: dict, state: dict, config) -> tuple[dict, dict]:
    """(adapter_config, LoRA weights) renamed from ChatGLM3's modules to the converted GlmForCausalLM's (`config`)."""
    targets = adapter_config.get("target_modules")
    if not isinstance(targets, (list, tuple)) or not set(targets) <= set(_LORA_TARGETS):
        raise ValueError(f"ChatGLM LoRA target_modules {targets!r}: expected a list of {sorted(_LORA_TARGETS)}")
    q_rows = config.num_attention_heads * config.head_dim
    kv_rows = config.num_key_value_heads * config.head_dim
    out = {}
    for key, tensor in state.items():
        module, lora, tail = key.partition(".lora_")
        module = module.removeprefix(_PEFT_PREFIX)
        glm = _TOP_NAMES.get(module + ".weight")
        match = _LAYER.fullmatch(module)
        if glm is None and match and match[2] == "self_attention.query_key_value":
            glm = f"model.layers.{match[1]}.self_attn.qkv.weight"
        elif glm is None and match and match[2] + ".weight" in _LAYER_NAMES:
            glm = f"model.layers.{match[1]}.{_LAYER_NAMES[match[2] + '.weight']}"
        if not lora or glm is None:
            raise ValueError(f"unexpected ChatGLM LoRA weight {key!r}")
        base = _PEFT_PREFIX + glm.removesuffix(".weight")
        if not base.endswith(".qkv"):
            out[f"{base}.lora_{tail}"] = tensor
            continue
        parts = tensor.split([q_rows, kv_rows, kv_rows]) if tail.startswith("B") else (tensor,) * 3
        for proj, part in zip(("q_proj", "k_proj", "v_proj"), parts):
            out[f"{base.removesuffix('qkv')}{proj}.lora_{tail}"] = part.clone()  # B split by rows, A shared
    renamed = [name for t in targets for name in _LORA_TARGETS[t]]
    return {**adapter_config, "target_modules": renamed}, out


def llm_glm_config(llm: str):
    """The GlmConfig of `--llm` for renaming a ChatGLM LoRA: a ChatGLM3 folder's (converted) or a GLM model's."""
    from transformers import AutoConfig

    if is_chatglm3(llm):
        return glm_config(json.loads((Path(llm) / "config.json").read_text()))
    config = AutoConfig.from_pretrained(llm)
    if config.model_type != "glm":
        raise ValueError(f"{llm} is a {config.model_type!r} model; a ChatGLM LoRA needs ChatGLM3 or its GLM conversion")
    return config


def keeps_lm_head_lora(llm) -> bool:
    """True for GLM models: VTimeLLM's GLM recipe puts LoRA on ChatGLM3's `output_layer`, GLM's `lm_head`."""
    return getattr(getattr(llm, "config", None), "model_type", None) == "glm"


def default_conv_format(llm, tokenizer, stage_format: str) -> str:
    """`chatglm3` instead of the stage's `v1` for a GLM model with ChatGLM3's tokens (VTimeLLM's GLM recipe); a GLM-4
    tokenizer (`<sop>`, not `sop`) and every other model keep the stage's format."""
    if stage_format != "v1" or getattr(llm.config, "model_type", None) != "glm":
        return stage_format
    vocab = tokenizer.get_vocab()
    return "chatglm3" if all(t in vocab for t in ("[gMASK]", "sop", "<|user|>", "<|assistant|>")) else stage_format
