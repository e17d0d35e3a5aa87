import copy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

TINY = {
    "seeds": [0],
    "data": {"source": "synthetic", "synthetic": {"num_classes": 4, "size": 160, "channels": 1, "img_size": 8}},
    "probe": {"size": 16},
    "teacher": {
        "model": "vit_tiny_patch16_224",
        "overrides": {"img_size": 8, "patch_size": 2, "embed_dim": 16, "depth": 3, "num_heads": 2},
        "train": {"epochs": 2, "batch_size": 32, "checkpoint_every": 0, "warmup_epochs": 0},
    },
    "student": {
        "model": "vit_tiny_patch16_224",
        "overrides": {"img_size": 8, "patch_size": 2, "embed_dim": 8, "depth": 2, "num_heads": 1},
        "train": {"epochs": 2, "batch_size": 32, "checkpoint_every": 1, "warmup_epochs": 0},
    },
    "settings": [
        {"name": "baseline", "method": "none"},
        {"name": "logit", "method": "logit"},
        {"name": "spectral_last", "method": "spectral", "layers": "last"},
        {"name": "projector_first", "method": "projector", "layers": "first"},
    ],
    "metrics": {"bootstrap": 20},
}


@pytest.fixture
def tiny_raw():
    """The tiny test experiment, before validation (a fresh copy per test)."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_cfg(tiny_raw):
    from distdyn.config import load_config

    return load_config(tiny_raw)
