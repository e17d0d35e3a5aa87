"""What Snakemake jobs inherit from the process that plans them, and the device they were granted."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def stamp() -> str:
    """The prefix of every distdyn job's log line."""
    return f"[distdyn {time.strftime('%H:%M:%S')}]"


def export_environment(pkg_dir: str | Path) -> None:
    """Put this interpreter's bin directory first on PATH and `pkg_dir` on PYTHONPATH.

    Jobs then run `python -m distdyn...` with the interpreter that runs Snakemake (a venv
    need not be activated; under --sdm conda the rule's environment comes first on PATH)
    and import distdyn from the checkout, installed or not.
    """
    env = os.environ
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pkg_dir), env.get("PYTHONPATH", "")) if p)


def visible_gpus() -> str:
    """' (CUDA_VISIBLE_DEVICES=2,3)' for a job's device line when the variable is set (distdyn.slots sets it to
    the GPUs the job was given), else ''."""
    ids = os.environ.get("CUDA_VISIBLE_DEVICES")
    if ids is None:
        return ""
    return f" (CUDA_VISIBLE_DEVICES={ids})" if ids else ' (CUDA_VISIBLE_DEVICES="")'


def granted_device(gpu: int) -> str:
    """'cuda' when the job was granted a GPU (`--gpu N`, N > 0) and torch sees one, else 'cpu'."""
    import torch  # here, not at the top: the Snakefile imports this module when it plans jobs

    return "cuda" if gpu > 0 and torch.cuda.is_available() else "cpu"
