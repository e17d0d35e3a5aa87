"""The activation dump's HDF5 layout and its readers (h5py and numpy only: no model code).

Layout of a dump (paper.md 2.1 and 2.4), written by `distdyn.activations`:
  /blocks          [L, B, N, C]  block outputs before the final norm, prefix tokens dropped,
                                 tokens in row-major grid order; attributes layer_min, layer_max
  /labels          [B]           true labels
  /probe_indices   [B]           indices into the validation split
  /logits          [B, classes]
  /grad_magnitude  [L, B]        mean |d logit_target / d block output| over the block's whole output
attributes: grid_h, grid_w, model, role, setting, seed, epoch, checkpoint, layer_names, config_hash, distdyn_version
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .errors import DistdynError, first_line, remedy

DATASETS = ("blocks", "labels", "probe_indices", "logits", "grad_magnitude")
ATTRS = ("grid_h", "grid_w", "model", "role", "setting", "seed", "epoch", "checkpoint", "layer_names", "config_hash",
         "distdyn_version")


class DumpError(DistdynError):
    """An HDF5 file that is not a complete, finite distdyn activation dump of what its reader asked for."""


class ValueRange:
    """Per-layer min and max of the values as stored, kept while writing so that readers
    (the entropy's file-wide range) need no extra pass over the file."""

    def __init__(self, layers: int):
        self.lo = np.full(layers, np.inf, dtype=np.float32)
        self.hi = np.full(layers, -np.inf, dtype=np.float32)

    def update(self, stored: np.ndarray, layer: int | None = None) -> None:
        """Fold in stored values: [L, b, N, C] for all layers, or [b, N, C] of one `layer`."""
        axes = tuple(range(1, stored.ndim)) if layer is None else None
        where = slice(None) if layer is None else layer
        self.lo[where] = np.minimum(self.lo[where], stored.min(axis=axes))
        self.hi[where] = np.maximum(self.hi[where], stored.max(axis=axes))

    def write(self, f: h5py.File) -> None:
        f["blocks"].attrs["layer_min"] = self.lo
        f["blocks"].attrs["layer_max"] = self.hi


def stored_value_range(f: h5py.File) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-layer (min, max) a dump recorded when written, or None for older dumps."""
    a = f["blocks"].attrs
    if "layer_min" not in a or "layer_max" not in a:
        return None
    return np.asarray(a["layer_min"], dtype=np.float32), np.asarray(a["layer_max"], dtype=np.float32)


def open_dump(path: str | Path) -> h5py.File:
    """Open a dump read-only; a truncated, foreign or incomplete file raises DumpError naming it."""
    try:
        f = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as e:
        raise DumpError(path, f"not a readable HDF5 file ({first_line(e)}); {remedy(path)}") from None
    missing = [d for d in DATASETS if d not in f] + [a for a in ATTRS if a not in f.attrs]
    if missing:
        f.close()
        raise DumpError(path, f"not a complete distdyn activation dump (missing {', '.join(missing)})")
    shape = f["blocks"].shape
    if len(shape) != 4 or f["grad_magnitude"].shape != shape[:2] or f["labels"].shape != shape[1:2] \
            or f.attrs["grid_h"] * f.attrs["grid_w"] != shape[2]:
        f.close()
        raise DumpError(path, f"inconsistent shapes (blocks {shape})")
    recorded = stored_value_range(f)
    if recorded is not None and not (np.isfinite(recorded[0]).all() and np.isfinite(recorded[1]).all()):
        layer = int(np.flatnonzero(~(np.isfinite(recorded[0]) & np.isfinite(recorded[1])))[0])
        f.close()
        raise non_finite(path, layer, "its recorded value range")
    return f


def non_finite(path, layer: int, where: str | None = None) -> DumpError:
    """The error for a dump whose 0-based `layer` holds NaN or Inf (`where`: what showed it)."""
    seen = f" ({where})" if where else ""
    return DumpError(path, f"layer {layer + 1} holds NaN or Inf{seen}; {remedy(path)} "
                           f"(the dump job refuses to write non-finite values)")


def dump_meta(f: h5py.File) -> dict:
    """The identifying attributes of an open dump."""
    a = f.attrs
    return {"model": str(a["model"]), "role": str(a["role"]), "setting": str(a["setting"]),
            "seed": int(a["seed"]), "epoch": int(a["epoch"]), "checkpoint": str(a["checkpoint"])}


def check_identity(f: h5py.File, path, expected: dict | None) -> dict:
    """The dump's identifying attributes, which must equal every key of `expected` (what the reader was
    asked to read: model, role, setting, seed, epoch, checkpoint); DumpError naming the file otherwise."""
    meta = dump_meta(f)
    wrong = {k: v for k, v in (expected or {}).items() if str(meta.get(k)) != str(v)}
    if wrong:
        said = ", ".join(f"{k} {meta.get(k)!r}" for k in wrong)
        asked = ", ".join(f"{k} {v!r}" for k, v in wrong.items())
        raise DumpError(path,
                        f"is another run's dump: its attributes say {said}, this job reads {asked}; {remedy(path)}")
    return meta
