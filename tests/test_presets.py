"""Every preset validates against the schema and its data checks (the documented commands: test_commands.py)."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distdyn.config import ConfigError, load_config, validate_schema
from test_data import _write_idx

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def _preset(name):
    return yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())


def test_all_presets_exist():
    assert {p.stem for p in PRESETS} == {"fashion_mnist", "fashion_mnist_cpu", "cifar100", "imagenet_paper",
                                        "cait_s24_analysis"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_passes_the_schema(path):
    cfg = validate_schema(yaml.safe_load(path.read_text()))
    assert cfg["settings"] or cfg["extra_models"]


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
