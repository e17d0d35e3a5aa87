"""The workflow through a REAL two-node SLURM cluster (tests/slurm/up.sh: two slurmd on this machine, one fake
GPU each): the paper preset at tiny sizes submitted by its header's command (`--profile profiles/slurm`) under
a one-minute time limit (the teacher in segments, one job requeued), compared with a plain local run of the
same config; and one training job on both nodes (train.nodes: 2, the documented command), compared with one
process.

Needs root and Debian's slurmctld/slurmd/slurm-client/munge packages (up.sh installs them with
apt-get when missing); skips with the reason only where those cannot be installed or run.
The local and the SLURM run go at the same time: the SLURM run mostly waits on the plugin's polls.
"""
import copy
import json
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import (ROOT, TINY, assert_close_weights, command_argv, documented_commands, job_env, log_lines,
                     make_workdir, package_env)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

UP = ROOT / "tests" / "slurm" / "up.sh"
UNAVAILABLE = 3  # up.sh's exit status when SLURM cannot be installed or run here
# Two nodes on this machine, each with one of its CPUs and one fake GPU (a clone of /dev/null: jobs get
# CUDA_VISIBLE_DEVICES, torch finds no CUDA and trains on the CPU). Each GPU job asks for one, so the 8 GPU
# jobs pair up like the CPU jobs on this 2-core machine (one fake GPU in all would run them one after the
# other: about 3 min more); the multi-node job takes both nodes.
NODES, FAKE_GPUS = 2, 1
SETTINGS = ("baseline", "logit", "spectral_last")
# The paper preset (presets/imagenet_paper.yaml, submitted by its header's SLURM command) at the tiny config's
# sizes: its recipe and structure (the teacher's and students' train sections, the distillation weights, a
# shared teacher forward), on synthetic data, a few epochs and 3 settings, in eager fp32 on the CPU.
# Under a one-minute time limit (resources.max_runtime, #26), with a teacher whose training (20 epochs of 9,600
# images, about a minute beside the local run on this 2-core machine) does not fit one job: each one-minute job
# starts up (about 20 s), trains the epochs that fit and stops before its end, and one is requeued mid-run.
SIZES = {"data": {**TINY["data"], "root": None, "img_size": None, "num_workers": 0,
                  "synthetic": {**TINY["data"]["synthetic"], "size": 12000},
                  "augment": {"timm": False, "hflip": False, "auto_augment": None, "re_prob": 0.0}},
         "probe": TINY["probe"],
         "teacher": {**TINY["teacher"], "pretrained": False,
                     "train": {**TINY["teacher"]["train"], "epochs": 20, "eval_batch_size": 64}},
         "student": {**TINY["student"], "train": {**TINY["student"]["train"], "eval_batch_size": 64, "warmup_epochs": 1,
                                                  "amp": "off", "compile": "off", "gpus": 1}},
         "settings": [s for s in TINY["settings"] if s["name"] in SETTINGS],
         "metrics": {"threads": 1, "bootstrap": 20},
         "resources": {"dump_mem_mb": 2000, "dump_runtime": 30, "max_runtime": 1, "startup_minutes": 0}}
TRAINING_RULES = ("pretrain_teacher", "distill_group", "distill_student")
PAPER_SLURM = next(c for w, c in documented_commands() if w == "presets/imagenet_paper.yaml" and "--profile" in c)
# Up to what the comparison needs: every GPU rule (the dumps), fewer sequential SLURM steps than `all`.
TARGETS = ("results/activations/teacher.h5", *(f"results/activations/{s}/seed_0/final.h5" for s in SETTINGS),
           "results/metrics/accuracy.csv")
# GPU rule -> its SLURM log directories (wildcards joined by "_", as the plugin names them)
GPU_RULES = {
    "pretrain_teacher": [""],
    "dump_model_activations": ["teacher"],
    "distill_group": ["0"],  # logit and spectral_last of seed 0, one teacher forward per batch
    "distill_student": ["baseline_0"],  # the others are restored from the group's store by restore_student (local)
    "dump_activations": [f"{s}_0" for s in SETTINGS],
}
RUN_TIMEOUT = 2400  # s; on expiry Snakemake gets SIGINT, so it scancels its jobs


def _up_sh(action: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(UP), action], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=900)


def _start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """`python -m snakemake ARGS` in workdir, output to workdir/snakemake.out. SIGINT is reset to its
    default in the child, so Snakemake handles it (and scancels) even if pytest was started with
    SIGINT ignored (a background job of a non-interactive shell)."""
    with open(workdir / "snakemake.out", "w") as out:
        return subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=job_env(), stdout=out,
                                stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait(proc: subprocess.Popen, workdir: Path, deadline: float) -> int:
    """Wait for proc until the deadline; then SIGINT (never SIGTERM: Snakemake would wait for its
    SLURM jobs instead of cancelling them), and SIGKILL 60 s later."""
    try:
        return proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise AssertionError(f"snakemake in {workdir} timed out after {RUN_TIMEOUT} s (sent SIGINT):\n"
                             f"{_tail(workdir / 'snakemake.out')}") from None


def _tail(path: Path, n: int = 6000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} missing)"


@pytest.fixture(scope="module")
def cluster():
    """A private SLURM cluster of NODES nodes with FAKE_GPUS fake GPUs each; always torn down (by recorded PID)."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.fail("snakemake-executor-plugin-slurm is not installed in this environment: "
                    "pip install -e '.[slurm]'")
    up = _up_sh("up", NODES=str(NODES), FAKE_GPUS=str(FAKE_GPUS))
    if up.returncode == UNAVAILABLE:
        reason = (up.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.skip(f"SLURM cannot be installed or run on this machine: {reason}")
    try:
        assert up.returncode == 0, f"tests/slurm/up.sh up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}"
        yield
    finally:
        down = _up_sh("down")
        print(down.stderr, file=sys.stderr)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The paper preset with the size overlay, submitted by its header's SLURM command (the targets first, the
    overlay after its config files), and run locally (--cores 2) with the same config files."""
    import shutil

    import yaml

    local = make_workdir(tmp_path_factory.mktemp("local"), {})
    slurm = make_workdir(tmp_path_factory.mktemp("slurm"), {})
    for wd in (local, slurm):
        shutil.copytree(ROOT / "presets", wd / "presets")
        (wd / "imagenet_paths.yaml").write_text("data: {root: data/imagenet}\n")
        (wd / "sizes.yaml").write_text(yaml.safe_dump(SIZES))
    assert (slurm / "profiles/slurm/config.yaml").is_file()
    argv = command_argv(PAPER_SLURM)  # [python, -m, snakemake, --profile, profiles/slurm, --configfile, ...]
    files = argv[argv.index("--configfile"):] + ["sizes.yaml"]

    t0 = time.monotonic()
    deadline = t0 + RUN_TIMEOUT
    local_proc = _start_snakemake(local, *TARGETS, "--cores", "2", *files)
    try:
        slurm_proc = _start_snakemake(slurm, *TARGETS, *argv[3:], "sizes.yaml", "--verbose")
        requeued = _requeue_once(slurm, slurm_proc, after_epochs=2)
        slurm_rc = _wait(slurm_proc, slurm, deadline)
    finally:
        local_rc = _wait(local_proc, local, deadline)
    print(f"local + SLURM runs: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    assert local_rc == 0, f"local run failed ({local_rc}):\n{_tail(local / 'snakemake.out')}"
    return {"local": local, "slurm": slurm, "slurm_rc": slurm_rc, "requeued": requeued}


def _squeue(job_ids: list[str]) -> dict[str, dict]:
    """job id -> {comment, tres (TresPerJob), state} from squeue (finished jobs stay for MinJobAge)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids),
                          "-O", "JobID:|,Comment:|,tres-per-job:|,State:|"],
                         capture_output=True, text=True, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, comment, tres, state = (f.strip() for f in line.split("|")[:4])
        jobs[job_id] = {"comment": comment, "tres": tres, "state": state}
    return jobs


def _slurm_jobs(workdir: Path) -> dict[str, tuple[str, str]]:
    """SLURM job id -> (rule, wildcards) from results/logs/slurm/rule_<rule>/[<wildcards>/]<jobid>.log."""
    root = workdir / "results/logs/slurm"
    jobs = {}
    for log in root.rglob("*.log"):
        parts = log.relative_to(root).parts
        assert parts[0].startswith("rule_") and log.stem.isdigit(), log
        jobs[log.stem] = (parts[0].removeprefix("rule_"), "/".join(parts[1:-1]))
    return jobs


def test_slurm_run_succeeds(runs):
    local, slurm = runs["local"], runs["slurm"]
    out = _tail(slurm / "snakemake.out", 20000)
    assert runs["slurm_rc"] == 0, f"SLURM run failed ({runs['slurm_rc']}):\n{out}"
    assert "steps (100%) done" in out, out
    names = sorted(p.name for p in (local / "results" / "metrics").iterdir())
    assert names and sorted(p.name for p in (slurm / "results" / "metrics").iterdir()) == names


def test_every_job_went_through_slurm_and_gpu_rules_got_a_gpu(runs):
    slurm = runs["slurm"]
    assert runs["slurm_rc"] == 0, _tail(slurm / "snakemake.out")
    out = (slurm / "snakemake.out").read_text()
    jobs = _slurm_jobs(slurm)
    # Every job but those of local rules (restore_student) was an sbatch job with its own log.
    local_rules = set(re.findall(r"^localrule (\w+):", out, re.M))
    finished = [l for l in out.splitlines() if l.startswith("Finished jobid:")
                and re.search(r"\(Rule: (\w+)\)", l).group(1) not in local_rules]
    sbatch = [l for l in out.splitlines() if "sbatch call:" in l]
    # A training job under the one-minute limit may take several attempts (segments): one sbatch job each, the
    # last one finished; the teacher took at least three.
    attempts = {}
    for job_id, where in sorted(jobs.items(), key=lambda kv: int(kv[0])):
        attempts.setdefault(where, []).append(job_id)
    # (Snakemake's "Finished jobid" lines count each job once, a retried one not always: SLURM's states below)
    assert len(jobs) == len(sbatch) and len(finished) <= len(attempts), (jobs, finished)
    assert len(attempts[("pretrain_teacher", "")]) >= 3, attempts
    assert all(len(ids) == 1 for (rule, _), ids in attempts.items() if rule not in TRAINING_RULES), attempts
    for rule, wildcards in GPU_RULES.items():
        got = sorted(w for r, w in attempts if r == rule)
        assert got == sorted(wildcards), (rule, jobs)
        calls = [l for l in sbatch if f"--comment rule_{rule} " in l or f"--comment rule_{rule}_wildcards_" in l]
        assert len(calls) == sum(len(attempts[(rule, w)]) for w in got) and all("--gpus=1" in l for l in calls), \
            (rule, calls)
    # SLURM's own record (finished jobs stay in squeue for MinJobAge): completed (the teacher's earlier
    # segments ended with exit status 75, FAILED to SLURM), GPU only where asked.
    state = _squeue(list(jobs))
    assert set(state) == set(jobs), f"squeue lost jobs: {set(jobs) - set(state)}"
    for job_id, (rule, where) in jobs.items():
        job = state[job_id]
        done = job_id == attempts[(rule, where)][-1]
        assert job["state"] == ("COMPLETED" if done else "FAILED"), (rule, job)
        assert job["comment"].startswith(f"rule_{rule}"), (rule, job)
        if rule in GPU_RULES:
            assert job["tres"] == "gres:gpu:1", f"{rule} (job {job_id}) did not request --gpus=1: {job}"
        else:
            assert "gpu" not in job["tres"], (rule, job)
    # Inside the job SLURM granted one fake GPU (a /dev/null clone), so training fell back to the CPU,
    # with the one thread the rule asked for; the job step itself ran `srun ... --gpus=1`. The two
    # students that need the teacher trained in the group job; their own jobs restored them and show
    # the group's log lines of that student.
    log = (slurm / "results/logs/distill_student/baseline_seed_0.log").read_text()
    assert "device cpu" in log and "threads 1" in log and "restored" not in log, log
    for s in SETTINGS[1:]:  # restored on this machine (a local rule), never submitted
        assert "restored" in (slurm / f"results/logs/restore_student/{s}_seed_0.log").read_text()
        assert "localrule restore_student:" in out and not (slurm / "results/logs/slurm/rule_restore_student").exists()
    jobstep = next((slurm / "results/logs/slurm/rule_distill_student/baseline_0").glob("*.log")).read_text()
    assert re.search(r"'CUDA_VISIBLE_DEVICES': '[0-9]'", jobstep) and "--gpus=1" in jobstep, jobstep[-3000:]


def _minutes(limit: str) -> int:
    """scontrol's TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = limit.rpartition("-")
    h, m, s = (int(x) for x in clock.split(":"))
    return (int(days) if days else 0) * 1440 + h * 60 + m + (s > 0)


def test_slurmctld_accepted_each_job_with_the_requests_of_the_plan(runs):
    """What each submitted job got, read back from slurmctld (`scontrol show job`), is what `python -m
    distdyn.plan` says the rules ask for: CPUs, memory, time limit, GPUs; the restore jobs ask for nothing."""
    slurm = runs["slurm"]
    assert runs["slurm_rc"] == 0, _tail(slurm / "snakemake.out")
    argv = command_argv(PAPER_SLURM)
    files = argv[argv.index("--configfile"):] + ["sizes.yaml"]  # the run's config files
    proc = subprocess.run([sys.executable, "-m", "distdyn.plan", "--forceall", "--json", *files], cwd=slurm,
                          env=job_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = {(j["rule"], "_".join(str(v) for v in j["wildcards"].values())): j
               for j in map(json.loads, proc.stdout.splitlines())}
    assert all(j["gpu"] == 0 and j["mem_mb"] == 0 for (rule, _), j in planned.items() if rule == "restore_student")
    checked = set()
    for job_id, (rule, wildcards) in _slurm_jobs(slurm).items():
        want, got = planned[(rule, wildcards)], _scontrol_job(job_id)
        assert int(got["NumCPUs"]) == want["cpus"], (rule, got["NumCPUs"], want)
        if want["mem_mb"]:  # else the profile's default-resources
            assert got["MinMemoryNode"] == f"{want['mem_mb']}M", (rule, got["MinMemoryNode"], want)
        if want["runtime"]:
            assert _minutes(got["TimeLimit"]) == want["runtime"], (rule, got["TimeLimit"], want)
        assert (got.get("TresPerJob") == f"gres:gpu:{want['gpu']}") == (want["gpu"] > 0), (rule, got, want)
        checked.add(rule)
    assert {"pretrain_teacher", "distill_group", "distill_student", "dump_activations"} <= checked, checked


def test_results_equal_the_local_run(runs):
    local, slurm = runs["local"], runs["slurm"]
    assert runs["slurm_rc"] == 0, _tail(slurm / "snakemake.out")
    acc = "results/metrics/accuracy.csv"
    assert (slurm / acc).read_bytes() == (local / acc).read_bytes()

    import h5py

    for dump in TARGETS[:-1]:  # the activation dumps, block by block
        with h5py.File(local / dump) as a, h5py.File(slurm / dump) as b:
            assert np.array_equal(a["blocks"][:], b["blocks"][:]) and np.array_equal(a["logits"][:], b["logits"][:])

    # the teacher trained in segments under the one-minute limit and requeued once, as one local run in one go
    drop = ("seconds", "images_per_s")
    assert log_lines(slurm / "results/teacher/log.jsonl", drop) == log_lines(local / "results/teacher/log.jsonl", drop)
    for s in ["teacher", *SETTINGS]:
        ckpt = "results/teacher/final.pt" if s == "teacher" else f"results/students/{s}/seed_0/final.pt"
        x, y = (torch.load(d / ckpt, weights_only=True) for d in (local, slurm))
        assert x.keys() == y.keys()
        assert x["model"].keys() == y["model"].keys() and x["model"]
        for name, tensor in x["model"].items():
            assert torch.equal(tensor, y["model"][name]), f"{ckpt}: {name} differs"
        for k, v in x.items():  # the rest: numbers, strings and the per-image correctness (a tensor)
            if k != "model":
                assert torch.equal(v, y[k]) if torch.is_tensor(v) else v == y[k], f"{ckpt}: {k} differs"


# ---------------------------------------------------------------- one training job on two nodes

# docs/slurm.md's command for a training job on two nodes, run as written (with --verbose for the sbatch line)
MULTINODE = next(c for w, c in documented_commands() if w == "docs/slurm.md" and "nodes: 2" in c)


def _scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol show job ID` as key -> value (finished jobs stay for MinJobAge)."""
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


@pytest.fixture(scope="module")
def multinode(cluster, tmp_path_factory):
    """The teacher of the tiny config trained by the documented command on both nodes (2 nodes x 1 process), and,
    at the same time, by one process as its rule runs it locally (`python -m distdyn.train ... --threads 1`)."""
    from distdyn.config import load_config, teacher_spec

    wd = make_workdir(tmp_path_factory.mktemp("multinode"), TINY)
    single = tmp_path_factory.mktemp("single")
    t0 = time.monotonic()
    with open(single / "train.out", "w") as out:
        ref = subprocess.Popen([sys.executable, "-m", "distdyn.train", "--spec", json.dumps(teacher_spec(load_config(
            copy.deepcopy(TINY)))), "--out", str(single / "teacher"), "--threads", "1"], cwd=single, env=package_env(),
            stdout=out, stderr=subprocess.STDOUT)
        with open(wd / "snakemake.out", "w") as log:
            proc = subprocess.Popen([*command_argv(MULTINODE), "--verbose"], cwd=wd, env=job_env(), stdout=log,
                                    stderr=subprocess.STDOUT,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        rc = _wait(proc, wd, time.monotonic() + 600)
        assert ref.wait(timeout=600) == 0, _tail(single / "train.out")
    print(f"multi-node SLURM run: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    assert rc == 0, f"{MULTINODE} failed ({rc}):\n{_tail(wd / 'snakemake.out')}"
    return {"workdir": wd, "single": single}


def test_a_training_job_spans_two_nodes(multinode):
    wd = multinode["workdir"]
    out = (wd / "snakemake.out").read_text()
    (job_id, where), = _slurm_jobs(wd).items()
    assert where == ("pretrain_teacher", ""), where
    # What the plugin asked for: nodes, one task (torchrun agent) each, one GPU per node; no job total of GPUs
    # (`--gpus`) and no tasks per GPU.
    (sbatch,) = [line for line in out.splitlines() if "sbatch call:" in line]
    for flag in ("--nodes=2", "--ntasks=2", "--gres=gpu:1"):
        assert flag in sbatch, (flag, sbatch)
    assert "--gpus" not in sbatch and "--ntasks-per-gpu" not in sbatch, sbatch
    # What slurmctld accepted and ran.
    job = _scontrol_job(job_id)
    assert job["JobState"] == "COMPLETED", job
    assert (job["NumNodes"], job["NumTasks"], job["TresPerNode"]) == ("2", "2", "gres:gpu:1"), job
    nodes = subprocess.run(["scontrol", "show", "hostnames", job["NodeList"]], capture_output=True, text=True,
                           check=True).stdout.split()
    assert len(nodes) == 2, job
    # Each node's torchrun agent started one process: both ranks of the job, one on each node.
    log = (wd / "results/logs/pretrain_teacher.log").read_text()
    ranks = dict(re.findall(r"rank (\d) of 2 \(local rank 0\) on (\S+): device cpu", log))
    assert sorted(ranks) == ["0", "1"] and sorted(ranks.values()) == nodes, log[-3000:]
    assert "x2 (DDP)" in log, log[-3000:]


def test_the_two_node_checkpoint_equals_one_process(multinode):
    """Not bit-identical: each rank averages the loss gradient over its 16 images and DDP all-reduces the two means
    (gloo), one process averages over the 32; the same sum in another float order, compounded over the steps.
    Hence tests/test_ddp.py's tolerance for two gloo processes on one machine; log losses to 4 places, and the
    evaluation (a count of correct images) exactly."""
    wd, single = multinode["workdir"], multinode["single"]
    assert_close_weights(wd / "results/teacher/final.pt", single / "teacher/final.pt", rtol=1e-4, atol=1e-5)
    a, b = log_lines(single / "teacher/log.jsonl"), log_lines(wd / "results/teacher/log.jsonl")
    assert len(a) == len(b) == TINY["teacher"]["train"]["epochs"]
    assert [round(line["train_loss"], 4) for line in a] == [round(line["train_loss"], 4) for line in b]
    assert [line["test_acc1"] for line in a] == [line["test_acc1"] for line in b]


# ---------------------------------------------------------------- longer than the time limit


def _requeue_once(wd: Path, proc: subprocess.Popen, after_epochs: int) -> str | None:
    """`scontrol requeue` the running teacher job once its second segment has trained `after_epochs` epochs;
    the job id, or None if the run ended first."""
    log = wd / "results/logs/pretrain_teacher.log"
    while proc.poll() is None:
        text = log.read_text() if log.is_file() else ""
        segment = text.split("resuming from")[1:]
        if segment and len(re.findall(r"^\S+ \S+ epoch \d+:", segment[-1], re.M)) >= after_epochs:
            running = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], capture_output=True, text=True,
                                     check=True).stdout.split("\n")
            job = next((line.split()[0] for line in running if "rule_pretrain_teacher" in line), None)
            if job:
                subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
                # SLURM holds a requeued batch job for about two minutes (EligibleTime); release it at once
                for _ in range(60):
                    if _scontrol_job(job).get("JobState") == "PENDING":
                        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)
                        break
                    time.sleep(0.5)
                return job
        time.sleep(0.5)
    return None


def test_the_teacher_ran_in_segments_under_the_time_limit_and_survived_a_requeue(runs):
    """Each attempt a one-minute job (resources.max_runtime: 1): it trains the epochs that fit and stops with
    one line; Snakemake's next attempt resumes; the job requeued mid-segment resumes under the same id.
    (The weights equal the uninterrupted local run's: test_results_equal_the_local_run.)"""
    slurm = runs["slurm"]
    assert runs["slurm_rc"] == 0, _tail(slurm / "snakemake.out")
    jobs = [job_id for job_id, (rule, _) in _slurm_jobs(slurm).items() if rule == "pretrain_teacher"]
    log = (slurm / "results/logs/pretrain_teacher.log").read_text()  # every attempt's lines
    stops = re.findall(r"stopped before the time limit at epoch (\d+) of 20; the next attempt resumes", log)
    assert len(stops) >= 2 and len(jobs) == len(stops) + 1, (jobs, stops, log[-3000:])  # one job per segment
    for job_id in jobs:
        assert _scontrol_job(job_id)["TimeLimit"] == "00:01:00", _scontrol_job(job_id)
    assert runs["requeued"] in jobs and _scontrol_job(runs["requeued"])["Restarts"] == "1", runs["requeued"]
    assert "terminated by SIGTERM" in log, log[-3000:]
    assert log.count("resuming from") == len(stops) + 1, log[-3000:]  # each next attempt, and the requeued job
