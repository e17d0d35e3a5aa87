"""A run's state between epochs: what it has done, its RNG stream, and the resume file that survives a kill."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .models import atomic_save
from .runtime import log
from .store import copy_file, other_numerics


@dataclass
class RunState:
    epoch: int = 0
    log_lines: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)


class Resume:
    """Full training state kept outside the rule's outputs, tied to the run by its key (distdyn.store.job_key:
    spec, code, and the content of the weights it reads).

    Epoch checkpoints are copied beside it (copy_file: never a hard link, so an output edited in place
    does not change the kept copy), so Snakemake deleting the outputs of a killed job loses nothing.
    It records the run's `numerics` (distdyn.store.numerics: device type, CPU threads), which are no part of
    the key: a CPU run does not continue with another thread count (it starts over).
    """

    def __init__(self, path: str | None, key: str, numerics: dict | None = None):
        self.path = Path(path) if path else None
        self.hash = key
        self.numerics = numerics

    def load(self) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            log(f"resume state {self.path} is unreadable ({e}); starting from scratch")
            return None
        if state.get("spec_hash") != self.hash:
            log(f"resume state {self.path} is stale (it was saved for key {state.get('spec_hash')}, this run's spec, "
                f"code and weights give {self.hash}); ignored")
            return None
        if self.numerics and (why := other_numerics(state.get("numerics"), self.numerics["device"],
                                                    self.numerics.get("threads"))):
            log(f"resume state {self.path} is not continued: {why}; starting from scratch")
            return None
        log(f"resuming from {self.path} after epoch {state['epoch']}")
        return state

    def save(self, state: dict) -> None:
        if self.path is not None:
            extra = {"numerics": self.numerics} if self.numerics else {}
            atomic_save({**state, "spec_hash": self.hash, **extra}, self.path)

    def keep(self, ckpt: Path) -> None:
        if self.path is not None:
            copy_file(ckpt, self.path.parent / f"{self.path.stem}.{ckpt.name}")

    def restore(self, ckpt: Path) -> None:
        kept = self.path.parent / f"{self.path.stem}.{ckpt.name}" if self.path else None
        if kept is not None and kept.is_file() and not ckpt.is_file():
            copy_file(kept, ckpt)

    def clear(self) -> None:
        if self.path is None:
            return
        for p in self.path.parent.glob(f"{self.path.stem}.*"):
            p.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)


class MemberRNG:
    """A run's own torch RNG stream (CPU, and CUDA when it trains there): its initial weights, a projector's,
    dropout and drop-path. It is swapped in around each of the run's steps, so runs training in one job
    never draw from each other's stream, nor from the data generator (shuffling, augmentation)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.state = self.capture()

    def capture(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load(self, saved: dict) -> None:
        """From a resume state (one saved on CPU keeps the CUDA stream this run started with)."""
        self.state = {**self.state, **{k: v for k, v in saved.items() if k in self.state}}

    @contextlib.contextmanager
    def active(self):
        torch.set_rng_state(self.state["torch"])
        if "cuda" in self.state:
            torch.cuda.set_rng_state(self.state["cuda"], self.device)
        try:
            yield
        finally:
            self.state = self.capture()
