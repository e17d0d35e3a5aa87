"""Analysis of models you already have: extra_models, alone (no settings: no training) and beside a study."""
import h5py
import pandas as pd
import pytest
import torch

from helpers import TINY, make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.slow

WIDE = {"img_size": 8, "patch_size": 2, "embed_dim": 16, "depth": 3, "num_heads": 2}
NARROW = {"img_size": 8, "patch_size": 2, "embed_dim": 8, "depth": 2, "num_heads": 1}


@pytest.fixture(scope="module")
def analysis_only(tmp_path_factory):
    """Two models of one's own, one as a plain timm state dict and one as a local pretrained file."""
    from distdyn.models import create_model

    tmp = tmp_path_factory.mktemp("analysis_only")
    torch.manual_seed(0)
    torch.save(create_model({"model": "vit_tiny_patch16_224", "overrides": WIDE}, 4, 1).state_dict(), tmp / "wide.pth")
    torch.save({"model": create_model({"model": "vit_tiny_patch16_224", "overrides": NARROW}, 4, 1).state_dict()},
               tmp / "narrow.pt")
    config = {"data": TINY["data"], "probe": TINY["probe"], "metrics": TINY["metrics"],
              "extra_models": [
                  {"name": "wide", "model": "vit_tiny_patch16_224", "overrides": WIDE,
                   "pretrained": str(tmp / "wide.pth")},
                  {"name": "narrow", "model": "vit_tiny_patch16_224", "overrides": NARROW,
                   "checkpoint": str(tmp / "narrow.pt")}]}
    workdir = make_workdir(tmp / "wd", config)
    jobs = planned_jobs(workdir)
    snakemake(workdir, "--cores", "2")
    return workdir, jobs


def test_analysis_only_runs_no_training(analysis_only):
    _, jobs = analysis_only
    assert jobs == {"select_probe": 1, "fetch_weights": 2, "dump_model_activations": 2, "build_kernels": 1,
                    "compute_model_metrics": 2, "gather_metrics": 1, "phases": 1, "encoding": 1, "plot": 1, "all": 1}


def test_each_model_is_dumped_measured_and_plotted(analysis_only):
    workdir, _ = analysis_only
    r = workdir / "results"
    for name, depth, width in (("wide", 3, 16), ("narrow", 2, 8)):
        with h5py.File(r / "activations" / f"{name}.h5") as f:
            assert f["blocks"].shape == (depth, 16, 16, width)
            assert f.attrs["role"] == "model" and f.attrs["setting"] == name
        for kind in ("entropy", "intensity", "spectra", "magnitudes", "outliers"):
            assert (r / "figures" / f"{name}_{kind}.png").stat().st_size > 5000
    layers = pd.read_csv(r / "metrics/layers.csv")
    assert set(layers.model) == {"wide", "narrow"} and set(layers.role) == {"model"}
    assert layers.groupby("model").layer.max().to_dict() == {"wide": 3, "narrow": 2}
    phases = pd.read_csv(r / "metrics/phases.csv")
    assert set(phases.model) == {"wide", "narrow"}
    assert set(pd.read_csv(r / "metrics/encoding.csv").model) == {"wide", "narrow"}
    assert (r / "figures/entropy_profiles.png").is_file()
    assert not (r / "teacher").joinpath("final.pt").exists() and not (r / "students").exists()


def test_extra_models_beside_a_study(tmp_path):
    """An extra model joins the teacher and the students in the tables and per-model figures (dry run)."""
    from distdyn.models import create_model

    torch.save(create_model({"model": "vit_tiny_patch16_224", "overrides": WIDE}, 4, 1).state_dict(),
               tmp_path / "w.pth")
    config = {**TINY, "extra_models": [{"name": "mine", "model": "vit_tiny_patch16_224", "overrides": WIDE,
                                        "checkpoint": str(tmp_path / "w.pth")}]}
    workdir = make_workdir(tmp_path / "wd", config)
    jobs = planned_jobs(workdir)
    assert jobs["fetch_weights"] == 1 and jobs["dump_model_activations"] == 2 and jobs["compute_model_metrics"] == 2
    out = snakemake(workdir, "-n", "-p", "--cores", "2").stdout
    assert "results/figures/mine_entropy.png" in out and "results/figures/teacher_entropy.png" in out
