"""Shared test settings: CPU-only DeepSpeed, quiet Ray, no hub access."""
import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from support.storage import s3, s3_server  # noqa: E402,F401  (fixtures: a local S3 server, a fresh bucket)
