"""The paper's models end to end on CPU: presets/imagenet_paper.yaml by its documented command.

CaiT-S24 (random weights, saved as a plain timm state dict, given as a local pretrained file) teaches
DeiT-Tiny at 224 on a tiny generated ImageFolder whose JPEGs are larger than 224, so the DeiT
transforms (RandomResizedCrop, RandAugment, random erasing) really run. The only change to the preset
is an overlay of sizes (epochs, batch sizes, probe size, checkpoint spacing, one process per job) and
`compile: off`: seven students compiling CaiT-S24 with inductor on two cores take over ten minutes,
and the compiled loop has its own CPU test (tests/test_train.py).
"""
import shlex
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from helpers import ROOT, documented_commands, fake_imagefolder, make_workdir, run_command

pytestmark = pytest.mark.slow

# The preset's students of one seed (the paper's seven settings and ViTKD), as the preset lists them.
STUDENTS = len(yaml.safe_load((ROOT / "presets" / "imagenet_paper.yaml").read_text())["settings"])
SIZES = {
    "data": {"num_workers": 2},
    "probe": {"size": 3},
    "teacher": {"train": {"eval_batch_size": 6}},
    "student": {"train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 6, "checkpoint_every": 0, "gpus": 1,
                          "compile": "off"}},
    "dump": {"chunk_images": 2},
    "metrics": {"chunk_images": 2, "bootstrap": 20},
    "analysis": {"permutations": 5},
}


def with_overlay(command: str, overlay: str) -> str:
    """The documented command with one more file at the end of its --configfile list."""
    words = shlex.split(command)
    i = words.index("--configfile") + 1
    while i < len(words) and not words[i].startswith("-"):
        i += 1
    return shlex.join(words[:i] + [overlay] + words[i:])


def paper_command() -> str:
    """The preset header's command for one machine."""
    return next(c for w, c in documented_commands() if w == "presets/imagenet_paper.yaml" and "--cores" in c)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    import timm

    wd = make_workdir(tmp_path_factory.mktemp("paper"), {})
    shutil.copytree(ROOT / "presets", wd / "presets")
    fake_imagefolder(wd / "data" / "imagenet")
    torch.manual_seed(0)
    torch.save(timm.create_model("cait_s24_224", num_classes=3).state_dict(), wd / "cait_s24_224.pth")
    (wd / "imagenet_paths.yaml").write_text(yaml.safe_dump(
        {"data": {"root": "data/imagenet"}, "teacher": {"pretrained": "./cait_s24_224.pth"}}))
    (wd / "cpu_sizes.yaml").write_text(yaml.safe_dump(SIZES))
    proc = run_command(wd, with_overlay(paper_command(), "cpu_sizes.yaml"), timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return wd


def test_teacher_dump_is_caits_24_self_attention_blocks(paper_run):
    with h5py.File(paper_run / "results/activations/teacher.h5") as f:
        assert f["blocks"].shape == (24, 3, 196, 384)
        assert f.attrs["arch"] == "cait_s24_224"
        assert list(f.attrs["layer_names"]) == [f"blocks.{i}" for i in range(24)]
        assert np.isfinite(f["blocks"][:]).all()


def test_student_dumps_are_deit_tiny(paper_run):
    dumps = sorted((paper_run / "results/activations").glob("*/seed_0/final.h5"))
    assert len(dumps) == STUDENTS
    for path in dumps:
        with h5py.File(path) as f:
            assert f["blocks"].shape == (12, 3, 196, 192), path
            assert f.attrs["arch"] == "deit_tiny_patch16_224"


def test_pairs_and_cka(paper_run):
    ckpt = torch.load(paper_run / "results/students/spectral_last/seed_0/final.pt", weights_only=True)
    assert ckpt["arch"] == "deit_tiny_patch16_224"
    claims = (paper_run / "results/claims.md").read_text()
    assert "| spectral_last | spectral | 11<->23 | late |" in claims
    assert "| projector_first_last | projector | 0<->0, 11<->23 | early+late |" in claims
    cka = pd.read_csv(paper_run / "results/metrics/cka.csv")
    per_checkpoint = cka.groupby("model")  # one per student checkpoint: {setting}/seed_{seed}/{checkpoint}
    assert per_checkpoint.ngroups == STUDENTS
    for _, table in per_checkpoint:
        assert table[["student_layer", "teacher_layer"]].drop_duplicates().shape[0] == 12 * 24


def test_training_used_the_deit_recipe(paper_run):
    log = (paper_run / "results/logs/restore_student/spectral_last_seed_0.log").read_text()
    assert "amp torch.bfloat16" in log
    teacher_log = (paper_run / "results/teacher/log.jsonl").read_text()
    assert '"epoch": 0' in teacher_log  # imported, not trained (train.epochs 0)


def test_report_builds(paper_run):
    """The report of a preset run is the run's own command plus --report (README, "Quick start")."""
    proc = run_command(paper_run, with_overlay(paper_command(), "cpu_sizes.yaml"), "--report", "results/report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (paper_run / "results/report.html").stat().st_size > 100_000


def test_a_pretrained_file_replaced_at_its_path_retrains_the_teacher_and_its_students(paper_run):
    """The local pretrained file is an input of fetch_weights: other weights at the same path are fetched and
    imported again, and every student that reads the teacher is planned (its key holds the teacher's content;
    tests/test_train.py checks that the group job then trains them again). Dry run; the file is put back."""
    import os
    import re

    import timm

    path = paper_run / "cait_s24_224.pth"
    saved, times = path.read_bytes(), (path.stat().st_atime, path.stat().st_mtime)
    try:
        torch.manual_seed(1)
        torch.save(timm.create_model("cait_s24_224", num_classes=3).state_dict(), path)
        proc = run_command(paper_run, with_overlay(paper_command(), "cpu_sizes.yaml"), "-n")
    finally:
        path.write_bytes(saved)
        os.utime(path, times)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    table = out[re.search(r"^job\s+count$", out, re.M).end():]
    planned = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table[:table.index("total")], re.M)}
    rules = ("fetch_weights", "pretrain_teacher", "distill_group", "distill_student", "restore_student")
    assert {k: planned.get(k) for k in rules} == {  # every student shares the teacher's forward: none trains alone
        "fetch_weights": 1, "pretrain_teacher": 1, "distill_group": 1, "distill_student": None,
        "restore_student": STUDENTS}
