"""Every preset validates; the paper's ImageNet preset dry-runs against a tiny fake ImageFolder."""
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distdyn.config import ConfigError, load_config, validate_schema
from test_data import _write_idx
from workflow_utils import make_workdir, planned_jobs, snakemake

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def _preset(name):
    return yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())


def test_all_presets_exist():
    assert {p.stem for p in PRESETS} == {"fashion_mnist", "fashion_mnist_cpu", "cifar100", "imagenet_paper"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_passes_the_schema(path):
    cfg = validate_schema(yaml.safe_load(path.read_text()))
    assert cfg["settings"]


@pytest.fixture
def fake_fashion(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 3200), ("t10k", 1200)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


@pytest.mark.parametrize("name", ["fashion_mnist", "fashion_mnist_cpu"])
def test_fashion_presets_validate_against_idx_files(name, fake_fashion):
    raw = _preset(name)
    raw["data"]["root"] = str(fake_fashion)
    cfg = load_config(raw)
    assert cfg["seeds"] == [0, 1, 2]
    assert cfg["student"]["overrides"]["embed_dim"] * 2 == cfg["teacher"]["overrides"]["embed_dim"]


def test_fashion_preset_names_a_missing_directory(tmp_path):
    raw = _preset("fashion_mnist_cpu")
    raw["data"]["root"] = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"data\.root"):
        load_config(raw)


def test_cifar100_preset_validates_against_a_pickle_folder(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 200), ("test", 1000)):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                         b"fine_labels": list(np.arange(n) % 100)}, f)
    raw = _preset("cifar100")
    raw["data"]["root"] = str(tmp_path)
    cfg = load_config(raw)
    assert cfg["data"]["source"] == "cifar100"


@pytest.fixture
def fake_imagenet(tmp_path):
    from PIL import Image

    for part in ("train", "val"):
        for cls in ("n01440764", "n01443537"):
            d = tmp_path / "imagenet" / part / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (64, 48), (40 * i, 0, 0)).save(d / f"{i}.JPEG")
    ckpt = tmp_path / "cait_s24_224.pth"
    torch.save({"model": {}}, ckpt)
    return tmp_path / "imagenet", ckpt


@pytest.mark.slow
def test_imagenet_paper_preset_dry_runs(fake_imagenet, tmp_path):
    root, ckpt = fake_imagenet
    raw = _preset("imagenet_paper")
    raw["data"]["root"], raw["teacher"]["checkpoint"] = str(root), str(ckpt)
    raw["probe"]["size"] = 4
    cfg = load_config(raw)
    pairs = {s["name"]: s.get("layers") for s in cfg["settings"]}
    assert pairs["spectral_last"] == [[11, 23]] and pairs["projector_first_last"] == [[0, 0], [11, 23]]
    t = cfg["student"]["train"]
    assert (t["epochs"], t["batch_size"], t["lr"], t["warmup_epochs"], t["min_lr"]) == (300, 2048, 0.002, 5, 1e-5)
    workdir = make_workdir(tmp_path / "wd", raw)
    jobs = planned_jobs(workdir)
    assert jobs["pretrain_teacher"] == 1 and jobs["distill_student"] == 7 and jobs["dump_activations"] == 7
    out = snakemake(workdir, "-n", "-p", "--cores", "8").stdout
    assert re.search(r"torch\.distributed\.run --standalone --nproc_per_node=8 -m distdyn\.train", out)
    assert "gpu=8" in out.replace(" ", "")
