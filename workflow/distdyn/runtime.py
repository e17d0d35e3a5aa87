"""Where and how a training job runs: device, DDP rank, precision, compilation, seeding, its log lines."""
from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .jobenv import granted_device, stamp, visible_gpus


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    amp_dtype: torch.dtype | None = None
    compile: bool = False
    compile_mode: str = "default"

    @property
    def main(self) -> bool:
        return self.rank == 0


def make_runtime(train_cfg: dict, gpu: int, device: str = "auto") -> Runtime:
    """Device, DDP rank and precision for this process; CUDA only when the job was given a GPU and one exists."""
    # torchrun's global rank decides who writes (Runtime.main); the rank on this node picks its GPU.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = granted_device(gpu)
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if world > 1:  # every rank says where it runs (SLURM's node name: one machine may hold several nodes)
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        log(f"rank {rank} of {world} (local rank {local}) on {node}: device {dev}")
    cuda = dev.type == "cuda"
    amp = {"auto": torch.bfloat16 if cuda else None, "bf16": torch.bfloat16, "off": None}[train_cfg["amp"]]
    comp = {"auto": cuda, "on": True, "off": False}[train_cfg["compile"]]
    return Runtime(dev, rank, world, amp, comp, compile_mode(train_cfg, world))


def compile_mode(train_cfg: dict, world: int) -> str:
    """train.compile_mode, except that DDP jobs use the default mode (CUDA graphs would capture its collectives)."""
    return train_cfg["compile_mode"] if world == 1 else "default"


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and Python; return the generator that drives shuffling and augmentation."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def log(msg: str) -> None:
    print(f"{stamp()} {msg}", file=sys.stderr, flush=True)


def autocast(rt: Runtime):
    if rt.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(rt.device.type, dtype=rt.amp_dtype)


def compiled(module: nn.Module | None, rt: Runtime) -> nn.Module | None:
    """`module` under torch.compile in the runtime's mode when compiling is on (None stays None)."""
    if module is None or not rt.compile:
        return module
    return torch.compile(module, mode=rt.compile_mode)


def run_header(spec: dict, rt: Runtime) -> str:
    """A run's first log line: what it is and where and how it trains."""
    return (f"{spec['role']} {spec['name']!r} seed {spec['seed']}: device {rt.device}{visible_gpus()}"
            f"{f' x{rt.world} (DDP)' if rt.world > 1 else ''}, amp {rt.amp_dtype}, "
            f"compile {rt.compile and rt.compile_mode}, threads {torch.get_num_threads()}")
