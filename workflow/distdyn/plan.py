"""A plan before the bill: every job a config would run, what it asks the scheduler for, and what it costs.

    python -m distdyn.plan [--configfile FILE ...] [--config KEY=VALUE ...] [--gpus N | --nodes M --gpus-per-node G]
                           [--data-size TRAIN VAL]

Run in the workflow's directory. The jobs and their requests are Snakemake's own: the Snakefile's DAG of the
jobs that would run now (as `snakemake -n` lists them), with each job's GPUs, nodes, CPUs, memory and
runtime as the rules compute them (a profile's `set-resources` can still change them at submission). The
estimates come from the throughput table (`resources.throughput`, docs/gpus.md): GPU-hours, and the wall
time when the jobs run on the GPUs given (`--gpus` on one box; `--nodes` x `--gpus-per-node` on a
cluster), each job as soon as its inputs exist and enough GPUs are free, queue waits not counted.
Jobs without an estimate (the CPU jobs: metrics, tables, figures; minutes each) count as zero.
The disk: the checkpoints and activation dumps the run writes. `--data-size` plans with another number of
training and validation images than the data folder holds (a study planned on a small copy of its data).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

TRAINING = ("pretrain_teacher", "distill_group", "distill_student")
DUMPS = ("dump_activations", "dump_model_activations")


@dataclass
class Job:
    rule: str
    wildcards: dict
    gpu: int
    nodes: int
    cpus: int
    mem_mb: int
    runtime: int
    estimate: float = 0.0  # minutes at the throughput table (0: not estimated)
    segments: int = 1  # attempts under resources.max_runtime
    deps: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.rule + "".join(f" {v}" for v in self.wildcards.values())


def plan(configfiles: list[str], config: dict, snakefile: Path, forceall: bool = False
         ) -> tuple[list[Job], dict[str, int]]:
    """The jobs Snakemake would run now (`forceall`: every job of the study), with their requests and estimates,
    and the disk the run writes."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        wf_api = api.workflow(resource_settings=ResourceSettings(cores=10**6),
                              config_settings=ConfigSettings(configfiles=[Path(f) for f in configfiles], config=config),
                              snakefile=snakefile, workdir=Path.cwd())
        workflow = wf_api.dag(dag_settings=DAGSettings()).workflow_api._workflow
        # What `snakemake --d3dag` runs before it prints the DAG (snakemake.workflow.Workflow.printd3dag).
        workflow._prepare_dag(forceall=forceall, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        return plan_jobs(workflow.dag, workflow.globals), disk_bytes(workflow.globals)


def plan_jobs(dag, g: dict) -> list[Job]:
    """The jobs to run, in a topological order, with their requests and estimates."""
    jobs = [j for level in dag.toposorted() for j in level if dag.needrun(j)]
    index = {j: i for i, j in enumerate(jobs)}
    out = []
    for j in jobs:
        res = j.resources
        gpu = int(res.get("gpu", 0) or 0)
        nodes = int(res.get("nodes", 1) or 1)
        gres = res.get("gres")
        if not gpu and gres:  # a multi-node job asks GPUs per node (gres=gpu:G)
            gpu = nodes * int(str(gres).rsplit(":", 1)[-1])
        request = training_request(j.rule.name, dict(j.wildcards), g)
        job = Job(j.rule.name, dict(j.wildcards), gpu, nodes, int(j.threads), int(res.get("mem_mb", 0) or 0),
                  int(res.get("runtime", 0) or 0), estimate_minutes(j.rule.name, g, request),
                  request.segments if request else 1, [index[d] for d in dag.dependencies[j] if d in index])
        out.append(job)
    return out


def training_request(rule: str, wildcards: dict, g: dict):
    """The distdyn.requests.Request of a training job (the Snakefile's), None for other jobs."""
    if rule == "pretrain_teacher":
        return g["TEACHER_REQUEST"]
    if rule == "distill_group":
        return g["GROUP_REQUEST"]
    if rule == "distill_student":
        return g["student_request"](wildcards["setting"])
    return None


def estimate_minutes(rule: str, g: dict, request=None) -> float:
    """A GPU job's minutes at the throughput table: a training request's estimate, and for a dump its probe
    images through the model once per checkpoint."""
    cfg = g["config"]
    tp = cfg["resources"]["throughput"]
    if request is not None:
        return request.estimate
    if rule == "dump_activations":
        return len(g["STUDENT_CKPTS"]) * cfg["probe"]["size"] / tp["student_eval"] / 60
    if rule == "dump_model_activations":
        return cfg["probe"]["size"] / tp["teacher_forward"] / 60
    return 0.0


def wall_minutes(jobs: list[Job], gpus: int | None, segment_wait: float = 0.0) -> float:
    """When the last job ends if each starts as soon as its inputs exist and its GPUs are free (list
    scheduling in the DAG's order on `gpus` GPUs; None: as many as the jobs want, the critical path); a job
    in segments waits `segment_wait` minutes before each segment after its first (its GPUs held, a bound)."""
    end = [0.0] * len(jobs)
    running: list[tuple[float, int]] = []  # (end time, GPUs) of started GPU jobs
    for i, job in enumerate(jobs):
        ready = max((end[d] for d in job.deps), default=0.0)
        start = ready
        if gpus is not None and job.gpu:
            # the earliest time from `ready` at which job.gpu GPUs are free, given the jobs started so far
            for t in sorted({ready} | {e for e, _ in running if e > ready}):
                if sum(n for e, n in running if e > t) + job.gpu <= gpus:
                    start = t
                    break
            running.append((start + job.estimate + (job.segments - 1) * segment_wait, job.gpu))
        end[i] = start + job.estimate + (job.segments - 1) * segment_wait
    return max(end, default=0.0)


def disk_bytes(g: dict) -> dict[str, int]:
    """Bytes of the checkpoints (every saved epoch of every run, weights in float32) and of the activation
    dumps (blocks x probe images x tokens x width at dump.dtype, per dumped checkpoint)."""
    from .models import model_footprint

    cfg, info = g["config"], g["DATA_INFO"]
    runs = len(g["student_runs"]())
    dtype = {"float16": 2, "float32": 4}[cfg["dump"]["dtype"]]
    probe = cfg["probe"]["size"]
    sizes = {}
    for role in ("teacher", "student"):
        params, depth, tokens, width = model_footprint(cfg[role], info.num_classes, info.in_chans)
        sizes[role] = (params * 4, depth * probe * tokens * width * dtype)
    ckpts = len(g["STUDENT_CKPTS"])
    teacher_ckpts = len(g["TEACHER_EPOCHS"]) + 1
    return {"checkpoints": runs * ckpts * sizes["student"][0] + teacher_ckpts * sizes["teacher"][0],
            "dumps": runs * ckpts * sizes["student"][1] + sizes["teacher"][1]}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError


def duration(minutes: float) -> str:
    if minutes < 90:
        return f"{minutes:.0f} min" if minutes >= 1 else "<1 min"
    return f"{minutes / 60:.1f} h"


def render(jobs: list[Job], disk: dict, gpus: int | None, gpus_per_node: int | None,
           segment_wait: float = 0.0) -> str:
    """The plan as text: one line per job (training jobs each, the others per rule), then the totals."""
    lines = [f"{'job':<40} {'GPUs':>5} {'nodes':>5} {'CPUs':>5} {'mem GB':>7} {'request':>9} {'estimate':>9} "
             f"{'segments':>8}"]
    shown: dict[str, list[Job]] = {}
    others: dict[str, int] = {}
    for job in jobs:
        if job.gpu or job.rule in TRAINING:
            shown.setdefault(job.name if job.rule in TRAINING else job.rule, []).append(job)
        else:
            others[job.rule] = others.get(job.rule, 0) + 1
    order = [*TRAINING, *DUMPS]
    rows = sorted(shown.items(), key=lambda kv: (order.index(kv[1][0].rule) if kv[1][0].rule in order else len(order),
                                                 kv[0]))
    for name, group in rows:
        job, n = group[0], len(group)
        label = name if n == 1 else f"{name} (x{n})"
        mem = f"{job.mem_mb / 1000:.0f}" if job.mem_mb else "-"
        request, estimate = (duration(m) if m else "-" for m in (job.runtime, job.estimate))
        lines.append(f"{label:<40} {job.gpu:>5} {job.nodes:>5} {job.cpus:>5} {mem:>7} {request:>9} {estimate:>9} "
                     f"{job.segments:>8}")
    if others:
        lines.append(f"and {sum(others.values())} CPU jobs, not estimated: "
                     + ", ".join(f"{r}" + (f" x{n}" if n > 1 else "") for r, n in sorted(others.items())))
    gpu_hours = sum(j.estimate * j.gpu for j in jobs) / 60
    lines += ["", f"jobs: {len(jobs)}; GPU-hours at the throughput table: {gpu_hours:,.1f}",
              f"critical path (unlimited GPUs): {duration(wall_minutes(jobs, None))}"]
    if gpus:
        layout = f"{gpus // gpus_per_node} nodes x {gpus_per_node} GPUs" if gpus_per_node else f"{gpus} GPUs"
        lines.append(f"wall time on {layout}: {duration(wall_minutes(jobs, gpus))} (queue waits not counted)")
        if any(j.segments > 1 for j in jobs):
            lines.append(f"wall time on {layout} with segments: {duration(wall_minutes(jobs, gpus, segment_wait))} "
                         f"(assumed: {segment_wait:.0f} min in the queue before each segment after a job's first; "
                         f"--segment-wait)")
        if gpus_per_node:
            misfits = [j.name for j in jobs if j.gpu > gpus_per_node * j.nodes or j.gpu > gpus]
            if misfits:
                lines.append(f"warning: {len(misfits)} job(s) ask for more GPUs per node than a node has "
                             f"({gpus_per_node}): {', '.join(misfits)}; set train.nodes")
    lines.append(f"disk: checkpoints {human_bytes(disk['checkpoints'])}, activation dumps {human_bytes(disk['dumps'])}")
    return "\n".join(lines)


def resize_data(train: int, val: int) -> None:
    """Make the data's description (distdyn.config.data_info, which the Snakefile's checks and requests
    read) report `train` and `val` images; its on-disk cache keeps the data's own."""
    import dataclasses

    from . import config

    data_info = config.data_info
    config.data_info = lambda data_cfg: dataclasses.replace(data_info(data_cfg), train_size=train, val_size=val)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", "--configfiles", nargs="+", default=[], help="config files, as snakemake's")
    p.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="overrides, as snakemake's --config")
    p.add_argument("--snakefile", default="Snakefile")
    p.add_argument("--gpus", type=int, help="GPUs the study runs on (one box), for the wall time")
    p.add_argument("--nodes", type=int, help="nodes of a cluster (with --gpus-per-node)")
    p.add_argument("--gpus-per-node", type=int)
    p.add_argument("--forceall", action="store_true", help="every job of the study, as if none had run")
    p.add_argument("--json", action="store_true", help="print the jobs as JSON lines (rule, wildcards, requests)")
    p.add_argument("--segment-wait", type=float, default=60.0, metavar="MIN",
                   help="minutes a training job's next segment is assumed to wait in the queue (default 60)")
    p.add_argument("--data-size", type=int, nargs=2, metavar=("TRAIN", "VAL"),
                   help="plan for this many training and validation images instead of the data's own")
    args = p.parse_args(argv)
    if (args.nodes is None) != (args.gpus_per_node is None):
        p.error("--nodes and --gpus-per-node go together")
    gpus = args.nodes * args.gpus_per_node if args.nodes else args.gpus
    from snakemake.cli import parse_config

    if args.data_size:
        resize_data(*args.data_size)
    try:
        overrides = parse_config(args.config)
    except ValueError as e:
        p.error(f"--config: {e}")
    jobs, disk = plan(args.configfile, overrides, Path(args.snakefile).resolve(), args.forceall)
    if args.json:
        import dataclasses
        import json

        for job in jobs:
            print(json.dumps(dataclasses.asdict(job)))
        return 0
    print(render(jobs, disk, gpus, args.gpus_per_node, args.segment_wait))
    return 0


if __name__ == "__main__":
    sys.exit(main())
