"""gpus > 1: torchrun with DDP gives the same numbers as one process (gloo on CPU)."""
import json
import subprocess
import sys

import pytest

from distdyn import train
from distdyn.config import student_spec
from helpers import ROOT, TINY, assert_close_weights, fake_imagefolder, log_lines, package_env, train_teacher


def _torchrun(*args: str, program: tuple[str, ...] = ("-m", "distdyn.train")) -> subprocess.CompletedProcess:
    """`python -m distdyn.train ARGS` (or another `program`) as two gloo processes; it must succeed."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *program, *args]
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


def _evaluate_shard(data: dict, train_cfg: dict) -> dict:
    """This process's evaluation of a fixed linear classifier (seeded: the same on every rank) on the
    validation split, and a fingerprint (pixel sum) of each image the model saw, in the order it saw them."""
    import torch
    from torch import nn

    from distdyn.batches import Batches
    from distdyn.engine import evaluate
    from distdyn.runtime import make_runtime

    rt = make_runtime(train_cfg, 0, "cpu")
    batches = Batches(data, train_cfg, rt)
    x0, _ = next(iter(batches.val()))
    torch.manual_seed(0)
    linear = nn.Linear(x0[0].numel(), batches.num_classes)
    seen = []

    def model(x):
        seen.append(x.flatten(1).double().sum(1))
        return linear(x.flatten(1))

    model.eval = lambda: None
    metrics, correct = evaluate(model, batches.val(), rt)
    return {"metrics": metrics, "correct": correct.tolist(), "seen": torch.cat(seen).tolist(), "rank": rt.rank,
            "shard": [batches.val_shard().start, batches.val_shard().stop]}


def _sharded_eval_cases(tmp_path):
    """In-memory tensors and an ImageFolder, each with an odd-sized validation split (uneven shards), more
    classes than 5 (a real top-5) and an evaluation batch size that leaves a short last batch."""
    from distdyn.config import load_config

    synthetic = {"source": "synthetic", "val_fraction": 0.3,
                 "synthetic": {"num_classes": 7, "size": 70, "channels": 1, "img_size": 8}}  # 21 val images
    folder = fake_imagefolder(tmp_path / "folder", classes=tuple(f"n{i:02d}" for i in range(7)), per_class=(1, 1),
                              size=(40, 36))  # 7 val images
    train_cfg = {"batch_size": 2, "eval_batch_size": 4}
    for data in (synthetic, {"source": "imagefolder", "root": str(folder), "img_size": 8}):
        cfg = load_config({**TINY, "data": data, "probe": {"size": 7},
                           "student": {**TINY["student"], "train": {**TINY["student"]["train"], **train_cfg}}})
        yield cfg["data"], cfg["student"]["train"]


def test_sharded_evaluation_equals_one_process(tmp_path):
    """Two gloo processes each evaluate a contiguous shard of an odd-sized validation split (11 + 10 and
    4 + 3 images); the summed counts give one process's accuracies exactly, the gathered correctness is
    one process's in the split's order, and each rank's model saw its shard's images only."""
    cases = list(_sharded_eval_cases(tmp_path))
    _torchrun(json.dumps(cases), str(tmp_path / "ddp"), program=(__file__,))  # one launch for both cases
    for i, (data, train_cfg) in enumerate(cases):
        one = _evaluate_shard(data, train_cfg)
        ranks = [json.loads((tmp_path / "ddp" / f"{i}_rank_{r}.json").read_text()) for r in range(2)]
        n, what = len(one["correct"]), data["source"]
        assert n % 2 == 1 and ranks[0]["shard"] == [0, n // 2 + 1] and ranks[1]["shard"] == [n // 2 + 1, n]
        for r in ranks:
            assert r["metrics"]["test_acc1"] == one["metrics"]["test_acc1"], what
            assert r["metrics"]["test_acc5"] == one["metrics"]["test_acc5"], what
            assert r["metrics"]["test_loss"] == pytest.approx(one["metrics"]["test_loss"], rel=1e-12), what
            assert r["correct"] == one["correct"], what
            start, stop = r["shard"]
            assert r["seen"] == one["seen"][start:stop], f"{what}: rank {r['rank']} saw other images than its shard"
        if what == "synthetic":  # the counts and the order are tested on a model neither always right nor wrong
            assert 0 < sum(one["correct"]) < n and one["metrics"]["test_acc1"] < one["metrics"]["test_acc5"] < 100


if __name__ == "__main__":  # a rank of test_sharded_evaluation_equals_one_process, under torchrun
    from pathlib import Path

    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for i, (data, train_cfg) in enumerate(json.loads(sys.argv[1])):
        result = _evaluate_shard(data, train_cfg)
        (out / f"{i}_rank_{result['rank']}.json").write_text(json.dumps(result))
