"""Every snakemake command in the README and the presets' headers, run as written (a dry run: -n).

The commands are read from the documents (tests/helpers.documented_commands), never retyped.
Only the files a user provides are made here: a fake ImageFolder, CIFAR pickle folder and teacher
weights at the relative paths the documents name, and imagenet_paths.yaml.
"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import (ROOT, documented_commands, fake_cifar100, fake_imagefolder, make_workdir, readme_python_snippets,
                     run_command, two_at_a_time)

pytestmark = pytest.mark.slow

COMMANDS = documented_commands()
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A checkout as a user has it, plus the data and path files the documents tell them to provide."""
    import shutil

    import torch

    wd = make_workdir(tmp_path_factory.mktemp("commands"), {})
    (wd / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    shutil.copytree(ROOT / "presets", wd / "presets")
    fake_imagefolder(wd / "data" / "imagenet", per_class=(4, 11))  # 33 val images: the authors' probe takes 32
    fake_cifar100(wd / "data" / "cifar")
    torch.save({}, wd / "cait_s24_224.pth")
    (wd / "imagenet_paths.yaml").write_text(yaml.safe_dump(
        {"data": {"root": "data/imagenet"}, "teacher": {"pretrained": "./cait_s24_224.pth"}, "probe": {"size": 3}}))
    (wd / "my_changes.yaml").write_text("seeds: [0]\n")
    for snippet in readme_python_snippets():
        words = shlex.split(snippet)
        subprocess.run([sys.executable, *words[1:]], cwd=wd, check=True, timeout=120)
    return wd


def test_the_documents_have_commands():
    where = {w for w, _ in COMMANDS}
    assert "README.md" in where and {f"presets/{p.name}" for p in (ROOT / "presets").glob("*.yaml")} <= where


DRY_RUN = [(w, c) for w, c in COMMANDS if "--report" not in c and ("fashion_mnist" not in c or FASHION.is_dir())]


@pytest.fixture(scope="module")
def dry_runs(workdir):
    """Every command's dry run, two at a time (each is mostly one process importing torch and timm); a command
    written in several places (a preset's header and docs/presets.md) runs once."""
    runs = two_at_a_time(lambda c: run_command(workdir, c, "-n"), dict.fromkeys(c for _, c in DRY_RUN))
    return {(w, c): runs[c] for w, c in DRY_RUN}


@pytest.mark.parametrize("where,command", [c for c in COMMANDS if "--report" not in c[1]],
                         ids=[f"{w}: {c}" for w, c in COMMANDS if "--report" not in c])
def test_documented_command_dry_runs(dry_runs, where, command):
    if (where, command) not in dry_runs:
        pytest.skip(f"{FASHION} is absent (Debian's dataset-fashion-mnist; .ci/run installs it)")
    proc = dry_runs[(where, command)]
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{where}: {command}\n{out[-3000:]}"
    if "--lint" in command:  # lints the workflow and runs nothing, dry or not
        assert "Congratulations, your workflow is in a good condition!" in out
    else:
        assert "This was a dry-run" in out
    assert "Traceback" not in out


def test_a_preset_is_the_whole_experiment(workdir):
    """Nothing of config.yaml (the toy default) leaks into a preset given with --configfile."""
    command = next(c for w, c in COMMANDS if w == "presets/imagenet_paper.yaml" and "--cores" in c)
    proc = run_command(workdir, command, "-n", "-p")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"model": "deit_tiny_patch16_224", "overrides": {}' in proc.stdout
    assert '"model": "cait_s24_224", "overrides": {}' in proc.stdout


def test_paper_preset_plans_eight_students_on_eight_gpus(workdir):
    """presets/imagenet_paper.yaml: the paper's pairs, optimiser and schedule, torchrun with 8 processes;
    the paper's seven settings and vitkd."""
    from distdyn.config import load_config

    raw = yaml.safe_load((ROOT / "presets/imagenet_paper.yaml").read_text())
    raw["data"]["root"] = str(workdir / "data/imagenet")
    raw["teacher"]["pretrained"] = str(workdir / "cait_s24_224.pth")
    raw["probe"]["size"] = 3
    cfg = load_config(raw)
    pairs = {s["name"]: s.get("layers") for s in cfg["settings"]}
    assert pairs["spectral_last"] == [[11, 23]] and pairs["projector_first_last"] == [[0, 0], [11, 23]]
    t = cfg["student"]["train"]
    assert (t["epochs"], t["batch_size"], t["lr"], t["warmup_epochs"], t["min_lr"]) == (300, 2048, 0.002, 5, 1e-5)
    command = next(c for w, c in COMMANDS if w == "presets/imagenet_paper.yaml" and "--cores" in c)
    proc = run_command(workdir, command, "-n", "-p")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert pairs["vitkd"] == [[0, 0], [1, 1], [11, 23]]
    assert len(re.findall(r"^(?:local)?rule restore_student:", out, re.M)) == 8
    assert out.count("rule dump_activations:") == 8
    assert out.count("rule fetch_weights:") == 1
    assert re.search(r"torch\.distributed\.run --standalone --nproc_per_node=8 -m distdyn\.train", out)
    assert "gpu=8" in out.replace(" ", "")


def _planned(out: str) -> dict[str, int]:
    """A dry run's job stats table: {rule: count}."""
    table = out[out.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table[:table.index("\ntotal")], flags=re.M)}


def test_one_output_of_a_preset_run(dry_runs):
    """docs/presets.md's and the preset header's commands for one output (the target before the options, or
    after `--configfiles ... --`), as written: both config files are read and only that output's jobs planned."""
    target = "results/figures/teacher_entropy.png"
    runs = {(w, c): p for (w, c), p in dry_runs.items() if target in c}
    assert {w for w, _ in runs} == {"docs/presets.md", "presets/imagenet_paper.yaml"}
    assert any("--configfiles" in c and c.endswith(f"-- {target}") for _, c in runs)
    assert any(c.startswith(f"snakemake {target} ") for _, c in runs)
    for (where, command), proc in runs.items():
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{where}: {command}\n{out[-3000:]}"
        # both files read as config files (the second's data.root is where the data is)
        assert re.search(r"Config file\(s\):.*imagenet_paper\.yaml.*imagenet_paths\.yaml", out), out[:3000]
        jobs = _planned(out)
        assert jobs["plot"] == 1 and jobs["pretrain_teacher"] == 1, (command, jobs)
        assert not {"all", "claims", "phases"} & set(jobs), (command, jobs)  # not the whole study
