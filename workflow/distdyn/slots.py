"""GPU slots on one machine: `python -m distdyn.slots N -- COMMAND ...` runs COMMAND on N GPUs of its own.

Snakemake's `--resources gpu=N` only counts: it admits GPU jobs up to N at once but tells none of them which
GPU to use, so every job would run on cuda:0. This wrapper, the prefix of every GPU rule's shell command, takes
N free GPUs (waiting while fewer are free), exports them as CUDA_VISIBLE_DEVICES and execs COMMAND, so torch
in COMMAND (and in each of torchrun's ranks) sees only those GPUs.

The GPUs: DISTDYN_GPU_IDS (comma-separated ids; an id listed k times is k slots, for k small jobs sharing that
GPU), else the ids in CUDA_VISIBLE_DEVICES of the Snakemake process, else the indices `nvidia-smi` lists. None
(a CPU machine): COMMAND runs unchanged. N = 0: COMMAND runs with CUDA_VISIBLE_DEVICES="" (no GPU visible).
Under SLURM (SLURM_JOB_ID set) the job's allocation is its devices: COMMAND runs unchanged.

A slot belongs to whoever holds an exclusive flock on its lock file in DISTDYN_SLOT_DIR (default
results/.slots under Snakemake's working directory; point two studies on one machine at one folder).
Imports no torch: it runs before the job's interpreter starts torch.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .errors import DistdynError, cli
from .jobenv import stamp

SLOT_DIR = "results/.slots"
POLL_S = 0.5  # between tries while waiting: a try is a few non-blocking flock calls


def gpu_ids(env: dict[str, str]) -> tuple[str, list[str]]:
    """(where they came from, the machine's GPU ids, possibly repeated): [] when none are found."""
    for var in ("DISTDYN_GPU_IDS", "CUDA_VISIBLE_DEVICES"):
        if var in env:
            return var, [i.strip() for i in env[var].split(",") if i.strip()]
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "nvidia-smi", []
    try:
        proc = subprocess.run([exe, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        proc = subprocess.CompletedProcess(exe, 1, "", str(e))
    if proc.returncode != 0:
        print(f"{stamp()} nvidia-smi failed ({(proc.stderr or proc.stdout).strip()[:200]}): no GPU slots, the job "
              "runs with the GPUs it finds", file=sys.stderr, flush=True)
        return "nvidia-smi", []
    return "nvidia-smi", proc.stdout.split()


def slot_files(ids: list[str], lock_dir: Path) -> list[tuple[str, Path]]:
    """(GPU id, lock file) per slot: an id's first slot of every GPU before any GPU's second, so that jobs
    spread over the GPUs before they share one."""
    seen: dict[str, int] = {}
    slots = []
    for gpu in ids:
        k = seen[gpu] = seen.get(gpu, -1) + 1
        name = re.sub(r"[^\w.-]", "_", gpu)  # a MIG UUID may hold '/'
        slots.append((k, len(slots), gpu, lock_dir / (f"gpu{name}.lock" if k == 0 else f"gpu{name}.{k}.lock")))
    return [(gpu, path) for _, _, gpu, path in sorted(slots)]


def try_take(slots: list[tuple[str, Path]], n: int) -> tuple[list[str], list[int]] | None:
    """N free slots on N different GPUs, locked: (their ids, the locks' descriptors), else None (nothing held).

    Ownership is an exclusive flock, not a pid file: the kernel drops the lock when the last descriptor of
    the open file is closed, which happens when the job's process exits however it ends (SIGKILL, OOM kill),
    so a slot is never left taken by a dead job and nobody has to decide whether a recorded pid is still that
    job (pids are reused). flock, not fcntl/lockf: closing another descriptor of the same file here (a slot
    found taken) must not drop a lock held through this one. The files are never deleted: the next job would
    create and lock a new file while the holder of the deleted one still runs.
    """
    ids, fds = [], []
    for gpu, path in slots:
        if gpu in ids:
            continue
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        ids.append(gpu)
        fds.append(fd)
        if len(ids) == n:
            return ids, fds
    for fd in fds:
        os.close(fd)
    return None


def take(n: int, ids: list[str], lock_dir: Path, where: str) -> tuple[list[str], list[int]]:
    """Wait for N free slots on different GPUs (one log line when the job has to wait) and lock them."""
    distinct = list(dict.fromkeys(ids))
    if n > len(distinct):
        raise DistdynError(where, f"the job asks for {n} GPUs, this machine has {len(distinct)} "
                                  f"({','.join(distinct)}): lower the config's train.gpus or resources.gpu")
    lock_dir.mkdir(parents=True, exist_ok=True)
    slots = slot_files(ids, lock_dir)
    waiting = False
    while (got := try_take(slots, n)) is None:
        if not waiting:
            print(f"{stamp()} waiting: the job needs {n} GPU{'s' * (n > 1)} and fewer of {','.join(ids)} are free "
                  f"(running jobs hold them; locks in {lock_dir})", file=sys.stderr, flush=True)
            waiting = True
        time.sleep(POLL_S * (1 + random.random()))  # jittered: jobs waiting together do not retry in step
    return got


def job_environment(n: int, env: dict[str, str], lock_dir: Path) -> tuple[dict[str, str], list[int]]:
    """The environment COMMAND runs in and the lock descriptors it must inherit."""
    env = dict(env)
    if "SLURM_JOB_ID" in env:
        return env, []
    if n == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
        return env, []
    where, ids = gpu_ids(env)
    if not ids:
        return env, []
    got, fds = take(n, ids, lock_dir, where)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(got)
    # the ids then mean the GPUs nvidia-smi shows under them (CUDA's own default order is fastest first)
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return env, fds


@cli
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m distdyn.slots", description=__doc__,
                                usage="python -m distdyn.slots N -- COMMAND ...",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("gpus", type=int, metavar="N", help="the job's GPUs (its resources.gpu)")
    args = p.parse_args(argv)
    if args.gpus < 0 or not command:
        p.error("give N >= 0 and the command after `--`")
    env, fds = job_environment(args.gpus, dict(os.environ), Path(os.environ.get("DISTDYN_SLOT_DIR", SLOT_DIR)))
    for fd in fds:
        os.set_inheritable(fd, True)  # COMMAND holds the locks from here on, until its process exits
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)
    except OSError as e:
        raise DistdynError(command[0], f"cannot run it: {e.strerror}") from None


if __name__ == "__main__":
    sys.exit(main())
