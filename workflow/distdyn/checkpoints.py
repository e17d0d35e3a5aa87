"""Checkpoint files: written atomically, read with weights_only=True. Torch only (no timm), so that a light
job that reads a checkpoint (distdyn.metrics accuracy: each final model's per-image correctness) starts light
and its code fingerprint leaves the models out."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import CheckpointError, first_line, remedy
from .io import atomic_path


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same directory, then rename: a killed job leaves no partial file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A distdyn checkpoint or a bare state dict, loaded with weights_only=True; CheckpointError naming a bad file."""
    if not Path(path).is_file():
        raise CheckpointError(path, "does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a bad file
        raise CheckpointError(path, f"not a loadable checkpoint ({first_line(e)}); a truncated or foreign file? "
                                    f"{remedy(path).capitalize()}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict checkpoint, got {type(obj).__name__}")
    return obj
