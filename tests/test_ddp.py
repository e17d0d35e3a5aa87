"""gpus > 1: torchrun with DDP gives the same numbers as one process (gloo on CPU)."""
import json
import subprocess
import sys

import pytest

from distdyn import train
from distdyn.config import student_spec
from helpers import ROOT, assert_close_weights, fake_imagefolder, log_lines, package_env, train_teacher


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    """`python -m distdyn.train ARGS` as two gloo processes; it must succeed."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "distdyn.train",
           *args]
    proc = subprocess.run(cmd, env=package_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_cfg, tmp_path):
    teacher = train_teacher(tiny_cfg, tmp_path / "teacher")
    spec = student_spec(tiny_cfg, "spectral_last", 0)
    train.run(spec, tmp_path / "single", teacher_path=str(teacher))
    proc = _torchrun("--spec", json.dumps(spec), "--out", str(tmp_path / "ddp"), "--teacher", str(teacher))
    assert "x2 (DDP)" in proc.stderr
    assert_close_weights(tmp_path / "ddp" / "final.pt", tmp_path / "single" / "final.pt", rtol=1e-4, atol=1e-5)
    a, b = log_lines(tmp_path / "single" / "log.jsonl"), log_lines(tmp_path / "ddp" / "log.jsonl")
    assert [round(l["train_loss"], 4) for l in a] == [round(l["train_loss"], 4) for l in b]
    assert [l["test_acc1"] for l in a] == [l["test_acc1"] for l in b]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_on_imagefolder_with_deit_transforms(tmp_path):
    """The paper preset's ImageFolder data path (RandomResizedCrop, RandAugment, random erasing, 2 loader
    workers): two gloo processes train the same weights as one, since each image's augmentation is seeded
    by (epoch, index) and a global batch holds the same images for any process count."""
    import yaml

    from distdyn.config import load_config

    raw = yaml.safe_load((ROOT / "presets" / "imagenet_paper.yaml").read_text())
    data = {**raw["data"], "root": str(fake_imagefolder(tmp_path / "imagenet", per_class=(8, 2))), "num_workers": 2}
    assert data["augment"] == {"timm": True, "hflip": True, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25}
    tiny = {"img_size": 224, "patch_size": 32, "embed_dim": 16, "depth": 2, "num_heads": 2}
    train_cfg = {"epochs": 2, "batch_size": 8, "eval_batch_size": 6, "warmup_epochs": 0, "checkpoint_every": 0}
    cfg = load_config({"data": data, "probe": {"size": 3},
                       "teacher": {"model": "vit_tiny_patch16_224", "overrides": tiny, "train": train_cfg},
                       "student": {"model": "vit_tiny_patch16_224", "overrides": tiny, "train": train_cfg},
                       "settings": [{"name": "logit", "method": "logit"}]})
    teacher = train_teacher(cfg, tmp_path / "teacher")
    spec = student_spec(cfg, "logit", 0)
    single = train.run(spec, tmp_path / "single", teacher_path=str(teacher))
    proc = _torchrun("--spec", json.dumps(spec), "--out", str(tmp_path / "ddp"), "--teacher", str(teacher))
    assert "x2 (DDP)" in proc.stderr
    assert_close_weights(tmp_path / "ddp" / "final.pt", tmp_path / "single" / "final.pt", rtol=1e-4, atol=1e-5)
    ddp = log_lines(tmp_path / "ddp" / "log.jsonl")
    assert [round(l["train_loss"], 4) for l in single] == [round(l["train_loss"], 4) for l in ddp]
    assert single[0]["images_per_s"] and len(single) == 2


@pytest.mark.slow
def test_two_process_ddp_group_matches_one_process(tiny_cfg, tmp_path):
    """A group job (students sharing one teacher forward) under torchrun: each member's weights as with
    one process, each member's own DDP reducer (the ranks step the members in the same order)."""
    teacher = str(train_teacher(tiny_cfg, tmp_path / "teacher"))
    names = ("logit", "spectral_last")  # (a projector's BatchNorm sees each rank's half of the batch: not compared)
    single = [{"spec": student_spec(tiny_cfg, n, 0), "out": str(tmp_path / "single" / n)} for n in names]
    train.run_group(single, teacher_path=teacher)
    ddp = [{**m, "out": str(tmp_path / "ddp" / m["spec"]["name"])} for m in single]
    proc = _torchrun("--group", json.dumps(ddp), "--teacher", teacher)
    assert proc.stderr.count("x2 (DDP)") == len(names)  # each member's device line, from rank 0 only
    for n in names:
        assert_close_weights(tmp_path / "ddp" / n / "final.pt", tmp_path / "single" / n / "final.pt", rtol=1e-4,
                             atol=1e-5, what=n)
        la, lb = log_lines(tmp_path / "single" / n / "log.jsonl"), log_lines(tmp_path / "ddp" / n / "log.jsonl")
        assert [round(l["train_loss"], 4) for l in la] == [round(l["train_loss"], 4) for l in lb]
        assert [l["test_acc1"] for l in la] == [l["test_acc1"] for l in lb]
