"""What each training job asks the scheduler for, from the config and the throughput table.

A training job's runtime is estimated from `resources.throughput` (images per second per process on
the job's device: a student's training step, a student's evaluation forward, the teacher's forward, the
teacher's training step, and one data-loader worker's decode-and-augment rate), the epochs and the data's
sizes; its memory and CPUs from the processes it starts and their loader workers. The Snakefile's rules
and `python -m distdyn.plan` both ask here, so a plan shows exactly what the jobs request.
No torch: the Snakefile imports this module when it plans jobs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """A training job's scheduler request: `gpu` processes (one GPU each on GPU rules) over `nodes` nodes,
    `cpus` and `mem_mb` per node, `runtime` minutes (at most resources.max_runtime); `estimate` is the
    throughput table's minutes before the margin and the start-up time are added; `segments` the attempts
    it takes under the time limit, `retries` the Snakemake retries it gets (segments - 1 and
    resources.extra_attempts for preemptions, where a time limit is set)."""

    gpu: int
    nodes: int
    cpus: int
    mem_mb: int
    runtime: int
    estimate: float
    segments: int = 1
    retries: int = 0


def loader_workers(data_cfg: dict) -> int:
    """Loader worker processes per training process: only an ImageFolder is read through a DataLoader
    (in-memory sources are sliced on the device)."""
    return data_cfg["num_workers"] if data_cfg["source"] == "imagefolder" else 0


def images_per_second(res: dict, data_cfg: dict, per_image_seconds: float) -> float:
    """One process's rate for work of `per_image_seconds` per image on its device, capped by what its loader
    workers can decode (an ImageFolder read by fewer workers than the device needs is loader-bound)."""
    rate = 1.0 / per_image_seconds
    if data_cfg["source"] != "imagefolder":
        return rate
    return min(rate, max(loader_workers(data_cfg), 1) * res["throughput"]["loader_worker"])  # 0: the main process


def within_limit(minutes: int, res: dict) -> int:
    """A runtime request no longer than the cluster's limit (resources.max_runtime)."""
    return minutes if res["max_runtime"] is None else min(minutes, res["max_runtime"])


def train_minutes(cfg: dict, role: str, info, students: list[bool] | None = None) -> float:
    """Estimated minutes of one training job at the throughput table: the teacher's (`role` "teacher"), or a
    student job training `students` (one bool each: does it read the teacher's forward?) on one batch
    stream; a group job's students share each batch's loading and teacher forward. Evaluation after every
    epoch is counted; with 0 epochs (an imported teacher) only the one evaluation."""
    res, data = cfg["resources"], cfg["data"]
    tp = res["throughput"]
    train = cfg[role]["train"]
    procs = train["gpus"]
    if role == "teacher":
        step, evals = 1.0 / tp["teacher_step"], 1.0 / tp["teacher_forward"]
    else:
        students = students or [False]
        teacher = any(students) / tp["teacher_forward"]
        step = teacher + len(students) / tp["student_step"]
        evals = len(students) / tp["student_eval"]
    epochs = train["epochs"]
    seconds = epochs * info.train_size / (procs * images_per_second(res, data, step))
    seconds += max(epochs, 1) * info.val_size / (procs * images_per_second(res, data, evals))
    return seconds / 60.0


def train_request(cfg: dict, role: str, info, students: list[bool] | None = None) -> Request:
    """The request of a training job (see train_minutes for `students`). `resources.train_runtime` and
    `resources.train_mem_mb`, where set, replace the estimates (a group job's runtime then grows with its
    students as the estimate would)."""
    res, train = cfg["resources"], cfg[role]["train"]
    procs, nodes = train["gpus"], train.get("nodes", 1)
    per_node = procs // nodes
    members = len(students or [False])
    workers = loader_workers(cfg["data"])
    estimate = train_minutes(cfg, role, info, students)
    if res["train_runtime"] is not None:
        runtime = res["train_runtime"] * members
    else:
        runtime = math.ceil(res["startup_minutes"] + res["runtime_margin"] * estimate)
    segments, retries, limit = 1, 0, res["max_runtime"]
    if limit is not None:
        # each segment starts up again; the rest of it trains (config.check_config: limit > startup_minutes)
        segments = max(1, math.ceil((runtime - res["startup_minutes"]) / (limit - res["startup_minutes"])))
        runtime, retries = within_limit(runtime, res), segments - 1 + res["extra_attempts"]
    extra = (members - 1) * res["group_member_mem_mb"]  # each further student's model, optimizer and loss state
    if res["train_mem_mb"] is not None:
        mem = res["train_mem_mb"] + extra
    else:
        mem = per_node * (res["rank_mem_mb"] + workers * res["worker_mem_mb"] + extra)
    return Request(gpu=res["gpu"] * procs, nodes=nodes, cpus=per_node * (train["threads"] + workers),
                   mem_mb=int(mem), runtime=int(runtime), estimate=estimate, segments=segments, retries=retries)


def rank_threads(cpus: int, processes: int, data_cfg: dict) -> int:
    """Torch threads of each of a job's `processes` on one node, given the node's `cpus` (the rule's threads:
    processes x (train.threads + loader workers), or fewer where a local run caps them at --cores): each
    process's share less its loader workers, at least one."""
    return max(1, cpus // max(processes, 1) - loader_workers(data_cfg))

