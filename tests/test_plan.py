"""`python -m distdyn.plan`: the jobs a config would run with their requests (Snakemake's own), and the bill.

The plans shown in the documents are run as written, in a checkout with what a user provides (an
ImageFolder of ImageNet's 1000 classes, the teacher's weights file, imagenet_paths.yaml), and their output
must equal the text the documents show: its numbers come from the throughput table, never typed in.
"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import ROOT, documents, job_env, make_workdir, two_at_a_time

pytestmark = pytest.mark.slow


def documented_plans() -> list[tuple[str, str, str]]:
    """(document, command, the output shown under it) for each `python -m distdyn.plan` line of a ```bash block
    that a ```text block follows."""
    found = []
    for where, text in documents():
        for block, shown in re.findall(r"```bash\n(.*?)```\n+```text\n(.*?)```", text, flags=re.S):
            plans = [l.strip() for l in block.replace("\\\n", " ").splitlines()
                     if l.strip().startswith("python -m distdyn.plan")]
            assert len(plans) <= 1, f"{where}: one plan per block, then its output"
            found += [(where, " ".join(plans[0].split()), shown)] if plans else []
    return found


PLANS = documented_plans()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A checkout with ImageNet's 1000 class folders (one tiny image each: the plan reads the folder's size
    from --data-size), the teacher's weights file and imagenet_paths.yaml as the preset's header says."""
    import shutil

    from PIL import Image

    wd = make_workdir(tmp_path_factory.mktemp("plan"), {})
    (wd / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    shutil.copytree(ROOT / "presets", wd / "presets")
    image = Image.new("RGB", (8, 8))
    for part in ("train", "val"):
        for c in range(1000):
            (wd / "data/imagenet" / part / f"n{c:08d}").mkdir(parents=True)
            image.save(wd / "data/imagenet" / part / f"n{c:08d}" / "0.JPEG")
    torch.save({}, wd / "cait_s24_224.pth")
    (wd / "imagenet_paths.yaml").write_text(yaml.safe_dump(
        {"data": {"root": "data/imagenet"}, "teacher": {"pretrained": "./cait_s24_224.pth"}}))
    return wd


def run_plan(workdir: Path, command: str) -> subprocess.CompletedProcess:
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "distdyn.plan"], command
    return subprocess.run([sys.executable, *words[1:]], cwd=workdir, env=job_env(), capture_output=True, text=True,
                          timeout=300)


def test_the_documents_show_plans_of_the_paper_study():
    commands = [c for _, c, _ in PLANS]
    assert len(commands) >= 4 and all("presets/imagenet_paper.yaml" in c for c in commands)
    assert any("--gpus 8" in c for c in commands) and any("--gpus-per-node 4" in c for c in commands)
    assert any("share_teacher: false" in c for c in commands)


@pytest.fixture(scope="module")
def plans(workdir):
    """Each documented plan's run, two at a time (each is mostly one process building the DAG)."""
    return two_at_a_time(lambda c: run_plan(workdir, c), [c for _, c, _ in PLANS])


@pytest.mark.parametrize("where, command, shown", PLANS, ids=[c[-60:] for _, c, _ in PLANS])
def test_a_documented_plan_prints_what_the_document_shows(plans, where, command, shown):
    proc = plans[command]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == shown.strip(), f"{where}: `{command}` now prints:\n{proc.stdout}"


def test_the_plan_shows_the_requests_snakemake_makes(workdir):
    """Every job of the plan, with the GPUs, CPUs, memory and runtime the dry run of the same config prints."""
    import json

    config = ["--configfile", "presets/imagenet_paper.yaml", "imagenet_paths.yaml"]
    plan = subprocess.run([sys.executable, "-m", "distdyn.plan", *config, "--json"], cwd=workdir, env=job_env(),
                          capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1000", *config], cwd=workdir,
                         env=job_env(), capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    printed = []
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", dry.stdout, flags=re.S | re.M):
        res = dict(re.findall(r"(\w+)=([^,\s]+)", (re.search(r"resources: (.*)", body) or [None, ""])[1]))
        threads = int(re.search(r"threads: (\d+)", body).group(1)) if "threads:" in body else 1
        printed.append((rule, int(res.get("gpu", 0)), threads, int(res.get("mem_mb", 0)), int(res.get("runtime", 0))))
    jobs = [json.loads(line) for line in plan.stdout.splitlines()]
    planned = [(j["rule"], j["gpu"], j["cpus"], j["mem_mb"], j["runtime"]) for j in jobs]
    assert sorted(planned) == sorted(printed)
    rules = {j["rule"] for j in jobs}
    assert {"pretrain_teacher", "distill_group", "restore_student", "dump_activations"} <= rules
    group = next(j for j in jobs if j["rule"] == "distill_group")
    assert group["gpu"] == 8 and group["cpus"] == 8 * (1 + 10) and group["estimate"] > 0
    assert all(j["gpu"] == 0 for j in jobs if j["rule"] == "restore_student")


def test_under_a_48_hour_limit_no_job_asks_for_more(workdir):
    """resources.max_runtime caps every request; a longer training runs in segments, which the plan shows."""
    config = ["--configfile", "presets/imagenet_paper.yaml", "imagenet_paths.yaml",
              "--config", "resources={max_runtime: 2880}", "student={share_teacher: false}"]
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "64", *config], cwd=workdir,
                         env=job_env(), capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    runtimes = [int(r) for r in re.findall(r"\bruntime=(\d+)", dry.stdout)]
    assert runtimes and max(runtimes) <= 2880
    # at a tenth of the throughput each student needs about two days: it runs in segments
    slow = ["--config", "resources={max_runtime: 2880, throughput: {student_step: 1136, teacher_forward: 456, "
            "student_eval: 3409, loader_worker: 295}}", "student={share_teacher: false}"]
    plan = subprocess.run([sys.executable, "-m", "distdyn.plan", *config[:3], *slow, "--gpus", "8",
                           "--data-size", "1281167", "50000"], cwd=workdir, env=job_env(), capture_output=True,
                          text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    students = [l for l in plan.stdout.splitlines() if l.startswith("distill_student")]
    assert len(students) == 8 and all(int(l.split()[-1]) >= 2 for l in students), plan.stdout
    assert all(re.search(r"\s48\.0 h\s", l) for l in students), plan.stdout
    assert "with segments:" in plan.stdout
