"""Faults the training loop turns into clear stops: a non-finite loss, and a full disk while saving.

Non-finite loss. Every micro-batch's loss and a per-sample "features are finite" flag are kept on the device (no
extra synchronisation); at the optimizer step the loop already all-reduces the mean loss, and when that is NaN or
infinite every rank stops with `NonFiniteLoss`, naming its micro-batches whose loss was not finite, their sample keys
and the samples whose features hold NaN/inf. The run stops rather than skipping: a NaN has already reached the
gradients of the step, and the last engine checkpoint (before it) is what a fixed run resumes from. Nothing after
the bad step is saved, so no NaN model is written.

Full disk. `saving(folder, what, latest)` wraps a save: ENOSPC (or torch's "unexpected pos" / "file write failed",
its way of reporting a short write) becomes `DiskFull`, naming the folder and the last complete checkpoint, and the
partial folder is removed so that nothing incomplete is left looking complete.
"""
from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path

import torch

from train.errors import DiskFull, NonFiniteLoss

_SHORT_WRITE = ("unexpected pos", "file write failed", "No space left", "Disk quota exceeded",
                "basic_ios::clear", "iostream error")  # the last two: a C++ stream (torch.save of a path) failing
_SHOWN = 8  # keys shown per list in the message


class StepGuard:
    """Collects one optimizer step's micro-batch losses and sample keys; `check` raises on a non-finite step."""

    def __init__(self) -> None:
        self.micro: list[tuple[torch.Tensor, torch.Tensor, list[str]]] = []

    def add(self, loss: torch.Tensor, features: torch.Tensor, keys: list[str]) -> None:
        finite = torch.isfinite(features.detach()).flatten(1).all(1) if features.dim() > 1 else torch.isfinite(features)
        self.micro.append((loss.detach(), finite, keys))

    def check(self, mean_loss: float, step: int) -> None:
        """Called with the all-reduced mean loss of `step`; clears the step's record."""
        micro, self.micro = self.micro, []
        if torch.isfinite(torch.tensor(mean_loss)):
            return
        bad = [k for loss, _, keys in micro if not torch.isfinite(loss).item() for k in keys]
        nan_features = [k for _, finite, keys in micro for k, ok in zip(keys, finite.tolist()) if not ok]
        where = (f"micro-batches with a non-finite loss on this rank hold samples {_few(bad)}" if bad
                 else "this rank's micro-batches were finite (another rank's were not)")
        feats = (f"; samples with NaN/inf features: {_few(nan_features)} (rebuild them, e.g. build-qa on clean "
                 "features)" if nan_features else "; no sample here has non-finite features (diverged: lower --lr?)")
        raise NonFiniteLoss(f"step {step}: loss is {mean_loss}; stopped, nothing of this step saved. {where}{feats}. "
                            "Resume from the last engine checkpoint once the data or options are fixed")


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, (RuntimeError, OSError)) and any(s in str(err) for s in _SHORT_WRITE)


@contextlib.contextmanager
def saving(folder: Path, what: str, latest: str | None = None, remove: bool = True):
    """Turn a full disk during the save of `what` into `DiskFull`; `remove`: delete the partial `folder`."""
    try:
        yield
    except Exception as err:
        if not is_disk_full(err):
            raise
        if remove:
            shutil.rmtree(folder, ignore_errors=True)
        free = shutil.disk_usage(folder.parent if not folder.exists() else folder).free
        last = f"the last complete one is {latest}" if latest else "no earlier complete one exists"
        partial = "the partial save was removed" if remove else "it is incomplete"
        raise DiskFull(f"no space left on device while saving {what} in {folder} ({free / 2**20:.0f} MiB free); "
                       f"{partial}, {last}; free some space and run again with --resume") from None
