"""timm models by name, their block outputs, and checkpoint I/O."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import timm
import torch
from torch import nn


def model_kwargs(model_cfg: dict, num_classes: int, in_chans: int) -> dict:
    """timm.create_model keyword arguments: the data's classes and channels, then the user's overrides."""
    return {"num_classes": num_classes, "in_chans": in_chans, **model_cfg.get("overrides", {})}


def create_model(model_cfg: dict, num_classes: int, in_chans: int, device: str | torch.device = "cpu") -> nn.Module:
    """Build `model_cfg["model"]` from scratch (no pretrained download, ever)."""
    with torch.device(device):
        return timm.create_model(model_cfg["model"], pretrained=False, **model_kwargs(model_cfg, num_classes, in_chans))


_SHAPES: dict[str, tuple[int, int]] = {}


def describe_model(model_cfg: dict, num_classes: int, in_chans: int) -> tuple[int, int]:
    """(depth, width) without allocating weights; memoised, since config checks and job specs both ask."""
    key = json.dumps([model_cfg, num_classes, in_chans], sort_keys=True, default=str)
    if key not in _SHAPES:
        model = create_model(model_cfg, num_classes, in_chans, device="meta")
        _SHAPES[key] = (num_blocks(model), model.num_features)
    return _SHAPES[key]


def num_blocks(model: nn.Module) -> int:
    return len(model.blocks)


def forward_with_blocks(model: nn.Module, x: torch.Tensor, indices: list[int] | None
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and the raw outputs of the selected blocks (NCHW, prefix tokens dropped, before the final norm).

    `indices=None` gives every block; an empty list runs a plain forward.
    """
    if indices is not None and len(indices) == 0:
        return model(x), []
    final, feats = model.forward_intermediates(x, indices=indices, norm=False, output_fmt="NCHW")
    return model.forward_head(final), feats


def block_tokens(feats: list[torch.Tensor]) -> torch.Tensor:
    """Stack NCHW block outputs to [L, B, N, C], tokens in row-major grid order."""
    return torch.stack([f.flatten(2).transpose(1, 2) for f in feats])


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# ---------------------------------------------------------------- checkpoints


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same directory, then rename: a killed job leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A distdyn checkpoint or a bare state dict, loaded with weights_only=True."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a bad file
        raise ValueError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def state_dict_of(ckpt: dict) -> dict:
    """The model weights of a distdyn checkpoint, a timm/DeiT checkpoint ({'model': ...}) or a bare state dict."""
    for key in ("model", "state_dict"):
        if isinstance(ckpt.get(key), dict):
            return ckpt[key]
    return ckpt
