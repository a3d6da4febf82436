"""Building an open_clip image encoder from its weights: a local file (OpenAI's TorchScript archive, an OpenAI-format
state dict or an open_clip checkpoint), open_clip's hub copy (checked first, so a missing one fails in one line), or
the seeded tiny-random configs; then only the image tower is kept. The errors a failed load raises live here too.
torch and open_clip are imported inside functions so that importing this module stays cheap.
"""
from __future__ import annotations

import warnings

from pipeline.contract.provenance import TINY_RANDOM
from pipeline.extract.encoders import TINY_NAMES


class ModelLoadError(RuntimeError):
    """The encoder cannot be built: a broken system, not bad data; the job stops before any work."""


class WeightsUnavailable(ModelLoadError, ValueError):
    """`--clip-pretrained` weights neither in the hub cache nor downloadable now (infra.hub): one line within seconds,
    where open_clip would meet huggingface_hub's minute of retries. A ValueError too, so every CLI prints one line."""


def tiny_clip(seed: int, name: str = TINY_RANDOM):
    from pipeline.extract.towers import tiny_model

    return tiny_model(name, seed)


def _is_openai_state(state: dict) -> bool:
    # OpenAI's own checkpoints carry these buffers; open_clip checkpoints do not.
    return "input_resolution" in state or "context_length" in state


def load_weights_file(path: str, model_name: str):
    """OpenAI TorchScript archive (torch.jit.load), else a tensor-only checkpoint (torch.load(weights_only=True))."""
    import torch
    from open_clip.model import build_model_from_openai_state_dict

    try:
        with warnings.catch_warnings():  # torch.jit.load is deprecated, but it is how OpenAI's archive loads
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.jit.load(path, map_location="cpu").state_dict()
        openai = True
    except RuntimeError:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling refused or not a torch file at all
            raise ModelLoadError(f"cannot read CLIP weights {path}: {type(e).__name__}: {e}") from e
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ModelLoadError(f"{path} holds a {type(state).__name__}, not a state dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        openai = _is_openai_state(state)
    # attn_mask is a buffer open_clip rebuilds from the config; traced archives carry it, state dicts do not.
    state = {k: v for k, v in state.items() if k != "attn_mask"}
    try:
        if openai:
            return build_model_from_openai_state_dict(state, cast_dtype=torch.float32).float()
        model = tiny_clip(0, model_name) if model_name in TINY_NAMES else open_clip_model(model_name, None)
        model.load_state_dict(state)
        return model
    except (KeyError, RuntimeError) as e:
        raise ModelLoadError(f"{path} does not fit {model_name}: {e}") from e


def open_clip_model(name: str, pretrained: str | None):
    import open_clip

    return open_clip.create_model(name, pretrained=pretrained, precision="fp32", device="cpu")


def require_pretrained(model: str, tag: str) -> None:
    """open_clip's hub copy of `tag` (e.g. `openai`) is cached or the hub answers; else WeightsUnavailable.

    Tags open_clip fetches from a plain URL instead of the hub (none of ViT-L-14's) are left to open_clip.
    """
    from open_clip.pretrained import get_pretrained_cfg

    from infra.hub import HubUnavailable, require_hub

    hub = (get_pretrained_cfg(model, tag) or {}).get("hf_hub", "")
    if not hub:
        return
    repo, _, filename = hub.rstrip("/").rpartition("/") if not hub.endswith("/") else (hub.rstrip("/"), "", "")
    files = (filename,) if filename else ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    try:
        require_hub(repo, "--clip-pretrained", files, instead="pass --clip-weights with a local copy of the weights",
                    what=f"--clip-pretrained {tag}: {repo} (the hub's copy of {model}'s weights) is not a local file")
    except HubUnavailable as err:
        raise WeightsUnavailable(str(err)) from None


def image_tower(model):
    """The CLIP without its text tower, which `encode_image` never uses (it calls `visual` alone): ViT-L/14 in
    float32 then holds 1.22 GB instead of 1.71 GB, once per CPU slot when the encoder runs in the decode tasks."""
    for name in [n for n in model._modules if n != "visual"]:
        setattr(model, name, None)
    for name in [*model._parameters, *model._buffers]:
        setattr(model, name, None)
    return model
