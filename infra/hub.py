"""What a model option names, and whether the model hub can give it: one resolver for every command's `--llm`,
`--tokenizer` and `--clip-pretrained`.

A value is `tiny-random` (seeded random weights built in-process, infra.tiny_llm; the CLIP encoder has its own),
a local path, or a hub name. A hub name is only handed to transformers/open_clip when it can be had: from the
local hub cache, or from a hub that answers. Without this check an offline machine meets a minute of
huggingface_hub's "Retrying in 8s" lines before the error; here it is one line within seconds:

- HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1): a name not in the cache is refused at once;
- otherwise the hub's address (HF_ENDPOINT, default huggingface.co) gets one TCP connect of at most
  VTL_HUB_PROBE_TIMEOUT seconds (3); no answer is a refusal naming the option and saying what to pass instead.

Imports nothing of ours; huggingface_hub is imported inside the functions (command lines stay import-light).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

TINY_RANDOM = "tiny-random"
"""The model name meaning "seeded random weights built in-process" (recorded in encoder ids and checkpoints;
pipeline.contract.provenance re-exports it)."""
LOCAL_FOLDER = "pass the model's local folder"


class HubUnavailable(ValueError):
    """A model option names neither a local path nor a model the hub can give now: one line naming the option."""


def looks_like_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; anything with more parts, or starting like a path, is a (missing) path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def model_source(name: str, option: str, files: tuple[str, ...] = ("config.json",)) -> str:
    """`tiny-random`, `local` (an existing path) or `hub` (a name the hub or its cache can give, `require_hub`).

    A path that does not exist is refused here, naming `option`, rather than sent to the hub as a repo id.
    """
    if name == TINY_RANDOM:
        return TINY_RANDOM
    if Path(name).expanduser().exists():
        return "local"
    if looks_like_path(name):
        raise HubUnavailable(f"{option} {name}: no such local folder")
    require_hub(name, option, files)
    return "hub"


def require_hub(repo_id: str, option: str, files: tuple[str, ...] = ("config.json",), instead: str = LOCAL_FOLDER,
                what: str | None = None) -> None:
    """Return when `repo_id` can be loaded now (one of `files` cached, or the hub reachable); else HubUnavailable,
    whose line starts with `what` (default: "OPTION REPO_ID: not a local path") and ends with `instead`."""
    from huggingface_hub import constants, try_to_load_from_cache

    what = what or f"{option} {repo_id}: not a local path"
    try:
        if any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in files):
            return
    except ValueError as err:  # not a valid repo id at all (huggingface_hub's HFValidationError)
        raise HubUnavailable(f"{what}, nor a model name ({err}); {instead}") from None
    if constants.HF_HUB_OFFLINE:
        raise HubUnavailable(f"{what}, and the hub is offline (HF_HUB_OFFLINE) with no cached copy of it; {instead}")
    reason = hub_unreachable(constants.ENDPOINT)
    if reason:
        raise HubUnavailable(f"{what}, not in the hub cache, and {reason}; {instead}")


def hub_unreachable(endpoint: str) -> str | None:
    """Why the hub at `endpoint` cannot be reached by one short TCP connect, or None when it answers."""
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=float(os.environ.get("VTL_HUB_PROBE_TIMEOUT", 3))).close()
    except OSError as err:
        return f"the hub {endpoint} cannot be reached ({err or type(err).__name__})"
    return None
