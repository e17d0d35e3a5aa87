"""distdyn.slots: what a job sees (CUDA_VISIBLE_DEVICES) when several run at once on one machine, on CPU.

The machine's GPUs are given as DISTDYN_GPU_IDS (or a fake nvidia-smi); each job is `python -m distdyn.slots N --
python -c ...` that writes what it sees to a file. Nothing here needs a GPU: the wrapper only sets a variable.
"""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import ROOT, TINY, make_workdir, snakemake

# A job: marks itself started, waits until argv[2] jobs have started (a barrier: jobs that pass it held their
# GPUs together; at most 30 s), holds on argv[3] seconds more, then writes {"cvd": CUDA_VISIBLE_DEVICES or None,
# "order": CUDA_DEVICE_ORDER, "start", "end"} to argv[1].
JOB = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    out, together, hold = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    start = time.time()
    seen = {"cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "order": os.environ.get("CUDA_DEVICE_ORDER")}
    out.with_suffix(".started").write_text("")
    while len(list(out.parent.glob("*.started"))) < together and time.time() < start + 30:
        time.sleep(0.02)
    time.sleep(hold)
    out.write_text(json.dumps({**seen, "start": start, "end": time.time()}))
""")


def env(tmp_path, **extra):
    """The jobs' environment: distdyn importable, locks under tmp_path, no GPU information but `extra`."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("CUDA_VISIBLE_DEVICES", "DISTDYN_GPU_IDS", "SLURM_JOB_ID", "CUDA_DEVICE_ORDER")}
    return {**base, "PYTHONPATH": str(ROOT / "workflow"), "DISTDYN_SLOT_DIR": str(tmp_path / "locks"),
            "PATH": str(tmp_path / "bin"), **extra}  # bin: no nvidia-smi unless a test puts one there


def start(tmp_path, gpus, name, env, together=1, hold=0.0):
    out = tmp_path / "seen" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    (tmp_path / "bin").mkdir(exist_ok=True)
    err = open(tmp_path / f"{name}.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "distdyn.slots", str(gpus), "--", sys.executable, "-c", JOB,
                             str(out), str(together), str(hold)], env=env, stderr=err)
    return proc, out


def waiting(name, tmp_path, timeout=30):
    """Wait until job `name` logs that it waits for a GPU (True), or `timeout` seconds (False)."""
    deadline = time.time() + timeout
    while "waiting" not in (tmp_path / f"{name}.err").read_text():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def seen(proc, out, timeout=30):
    assert proc.wait(timeout=timeout) == 0, out.with_suffix(".err")
    return json.loads(out.read_text())


def test_jobs_at_the_same_time_see_different_gpus(tmp_path):
    e = env(tmp_path, DISTDYN_GPU_IDS="0,1,2,3")
    jobs = [start(tmp_path, 1, f"job{i}", e, together=4) for i in range(4)]
    views = [seen(*j) for j in jobs]
    assert sorted(v["cvd"] for v in views) == ["0", "1", "2", "3"]
    assert min(v["end"] for v in views) > max(v["start"] for v in views)  # they held their GPUs together
    assert {v["order"] for v in views} == {"PCI_BUS_ID"}  # the ids mean nvidia-smi's
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == [f"gpu{i}.lock" for i in range(4)]


def test_a_two_gpu_job_gets_two_of_them(tmp_path):
    e = env(tmp_path, DISTDYN_GPU_IDS="0,1,2,3")
    one, two = start(tmp_path, 1, "one", e, together=2), start(tmp_path, 2, "two", e, together=2)
    a, b = seen(*one), seen(*two)
    ids = b["cvd"].split(",")
    assert len(ids) == 2 and len({a["cvd"], *ids}) == 3 and {a["cvd"], *ids} <= {"0", "1", "2", "3"}


def test_a_job_asking_more_than_is_free_waits_until_a_gpu_is_released(tmp_path):
    from distdyn.slots import slot_files, try_take

    (tmp_path / "locks").mkdir()
    held = try_take(slot_files(["0", "1"], tmp_path / "locks"), 2)  # another job's two GPUs
    assert held is not None
    proc, out = start(tmp_path, 1, "waiter", env(tmp_path, DISTDYN_GPU_IDS="0,1"))
    assert waiting("waiter", tmp_path)
    time.sleep(1)
    assert proc.poll() is None and not out.exists()  # still waiting
    os.close(held[1][1])  # GPU 1 is released
    assert seen(proc, out)["cvd"] == "1"
    waits = [ln for ln in (tmp_path / "waiter.err").read_text().splitlines() if "waiting" in ln]
    assert len(waits) == 1 and "needs 1 GPU and fewer of 0,1 are free" in waits[0]  # one line per wait
    os.close(held[1][0])


def test_a_killed_job_releases_its_gpu(tmp_path):
    e = env(tmp_path, DISTDYN_GPU_IDS="0")
    first, first_out = start(tmp_path, 1, "first", e, hold=60)
    while not first_out.with_suffix(".started").exists():
        assert first.poll() is None
        time.sleep(0.05)
    second, second_out = start(tmp_path, 1, "second", e)
    assert waiting("second", tmp_path) and second.poll() is None
    first.send_signal(signal.SIGKILL)  # no handler runs, no file is removed: the kernel drops the lock
    first.wait(timeout=10)
    assert seen(second, second_out)["cvd"] == "0"


def test_torchrun_ranks_see_the_jobs_gpus_and_the_job_holds_them_until_it_ends(tmp_path):
    e = env(tmp_path, DISTDYN_GPU_IDS="0,1,2", PATH=os.environ["PATH"])
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    # each rank (in ranks/) writes what it sees, then runs until the test creates ranks/go
    rank = "echo $CUDA_VISIBLE_DEVICES > r$LOCAL_RANK; mv r$LOCAL_RANK $LOCAL_RANK; until [ -e go ]; do sleep .1; done"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--no-python"]
    job = subprocess.Popen([sys.executable, "-m", "distdyn.slots", "2", "--", *torchrun, "/bin/sh", "-c", rank],
                           env=e, cwd=ranks, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "torchrun.err", "w"))
    while len(list(ranks.glob("[01]"))) < 2:
        assert job.poll() is None, (tmp_path / "torchrun.err").read_text()
        time.sleep(0.05)
    views = {(ranks / r).read_text().strip() for r in "01"}
    assert len(views) == 1 and len(set(views.pop().split(","))) == 2  # both ranks: the job's two GPUs
    second = start(tmp_path, 2, "second", e)
    assert waiting("second", tmp_path)  # the ranks run: their job holds two of the three GPUs
    (ranks / "go").touch()
    assert job.wait(timeout=60) == 0
    assert len(seen(*second)["cvd"].split(",")) == 2


def test_an_id_listed_twice_is_two_slots_on_that_gpu(tmp_path):
    e = env(tmp_path, DISTDYN_GPU_IDS="0,0,1")
    jobs = [start(tmp_path, 1, f"job{i}", e, together=3) for i in range(3)]
    assert sorted(seen(*j)["cvd"] for j in jobs) == ["0", "0", "1"]
    assert seen(*start(tmp_path, 2, "pair", e))["cvd"] in ("0,1", "1,0")  # two GPUs are two different ones


def test_the_ids_come_from_the_snakemake_process_or_nvidia_smi(tmp_path):
    assert seen(*start(tmp_path, 2, "allowed", env(tmp_path, CUDA_VISIBLE_DEVICES="5,7")))["cvd"] in ("5,7", "7,5")
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir(exist_ok=True)
    smi.write_text("#!/bin/sh\n[ \"$1 $2\" = '--query-gpu=index --format=csv,noheader' ] && printf '0\\n1\\n'\n")
    smi.chmod(0o755)
    assert seen(*start(tmp_path, 2, "smi", env(tmp_path)))["cvd"] in ("0,1", "1,0")
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2; exit 9\n")  # a driver that does not answer
    assert seen(*start(tmp_path, 1, "broken", env(tmp_path)))["cvd"] is None
    assert "nvidia-smi failed (NVIDIA-SMI has failed)" in (tmp_path / "broken.err").read_text()


@pytest.mark.parametrize("gpus", [0, 1])
def test_under_slurm_the_allocation_is_used_unchanged(tmp_path, gpus):
    e = env(tmp_path, SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="3", DISTDYN_GPU_IDS="0,1")
    assert seen(*start(tmp_path, gpus, "slurm", e))["cvd"] == "3"
    assert not (tmp_path / "locks").exists()


@pytest.mark.parametrize("ids", [None, ""], ids=["none", "empty"])
def test_without_gpus_the_job_runs_unchanged(tmp_path, ids):
    e = env(tmp_path, **({} if ids is None else {"DISTDYN_GPU_IDS": ids}))
    view = seen(*start(tmp_path, 1, "cpu", e))
    assert view["cvd"] is None and view["order"] is None
    assert not (tmp_path / "locks").exists()


def test_a_job_of_no_gpus_sees_none(tmp_path):
    from distdyn.slots import slot_files, try_take

    (tmp_path / "locks").mkdir()
    held = try_take(slot_files(["0"], tmp_path / "locks"), 1)  # every GPU is taken: a CPU job does not wait
    assert seen(*start(tmp_path, 0, "cpu", env(tmp_path, DISTDYN_GPU_IDS="0")), timeout=15)["cvd"] == ""
    os.close(held[1][0])


def test_more_gpus_than_the_machine_has_is_one_error_line(tmp_path):
    proc, out = start(tmp_path, 3, "big", env(tmp_path, DISTDYN_GPU_IDS="0,1,1"))
    assert proc.wait(timeout=15) == 1 and not out.exists()
    assert (tmp_path / "big.err").read_text() == ("error: DISTDYN_GPU_IDS: the job asks for 3 GPUs, this machine "
                                                  "has 2 (0,1): lower the config's train.gpus or resources.gpu\n")


# A throwaway Snakefile (not the study's: its GPU jobs need a trained study) whose six GPU jobs run the wrapper as
# the study's rules do; with --resources gpu=4 Snakemake admits more jobs than the two GPUs, so some wait.
SNAKEFILE = """
rule all:
    input: expand("seen/job{i}.json", i=range(6))

rule job:
    output: "seen/job{i}.json"
    log: "logs/job{i}.log"
    resources: gpu=1
    shell: "python -m distdyn.slots {resources.gpu} -- python job.py {output} 1 1.5 > {log} 2>&1"
"""


def test_snakemake_jobs_that_run_together_have_different_gpus(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "job.py").write_text(JOB)
    e = env(tmp_path, DISTDYN_GPU_IDS="0,1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=4"], cwd=tmp_path,
                          env=e, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    views = [json.loads((tmp_path / "seen" / f"job{i}.json").read_text()) for i in range(6)]
    assert {v["cvd"] for v in views} == {"0", "1"}
    together = [(a, b) for i, a in enumerate(views) for b in views[i + 1:]
                if a["start"] < b["end"] and b["start"] < a["end"]]
    assert together and all(a["cvd"] != b["cvd"] for a, b in together)
    waited = [i for i in range(6) if "waiting" in (tmp_path / f"logs/job{i}.log").read_text()]
    assert waited  # admitted by Snakemake (gpu=4) but not given a taken GPU


@pytest.mark.slow  # plans the real study (imports torch and timm)
def test_the_study_runs_every_gpu_job_under_the_wrapper(tmp_path):
    """The real Snakefile's GPU rules (training, dumps, metric jobs) start their command with the wrapper and the
    rule's gpu resource (metric jobs: 0 unless metrics.gpu)."""
    workdir = make_workdir(tmp_path, TINY)
    out = snakemake(workdir, "-n", "-p", "--forceall", "--cores", "2").stdout
    wrapped = {"pretrain_teacher": 1, "distill_group": 1, "distill_student": 1, "dump_activations": 1,
               "dump_model_activations": 1, "compute_metrics": 0, "compute_model_metrics": 0}
    rule, found = None, {}
    for line in out.splitlines():
        m = re.match(r"(?:local)?rule (\w+):", line.strip())
        rule = m.group(1) if m else rule
        if rule in wrapped and " -m distdyn." in line and not m:
            found.setdefault(rule, set()).update(re.findall(r"-m distdyn\.slots (\d+) -- ", line) or ["none"])
    assert found == {r: {str(n)} for r, n in wrapped.items()}
