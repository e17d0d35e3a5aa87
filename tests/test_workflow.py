"""End-to-end: the real Snakefile on the tiny config, in a temporary directory."""
import json

import h5py
import numpy as np
import pandas as pd
import pytest

from workflow_utils import make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from conftest import TINY

    workdir = make_workdir(tmp_path_factory.mktemp("e2e"), TINY)
    snakemake(workdir, "--cores", "2")
    return workdir


def test_every_output_exists_and_is_sane(finished_run):
    r = finished_run / "results"
    settings = ["baseline", "logit", "spectral_last", "projector_first"]
    assert (r / "teacher/final.pt").is_file() and (r / "teacher/probe_indices.csv").is_file()
    teacher_log = [json.loads(l) for l in (r / "teacher/log.jsonl").read_text().splitlines()]
    assert len(teacher_log) == 2
    for s in settings:
        d = r / "students" / s / "seed_0"
        assert (d / "epoch_1.pt").is_file() and (d / "final.pt").is_file()
        for ckpt in ("epoch_1", "final"):
            with h5py.File(r / "activations" / s / "seed_0" / f"{ckpt}.h5") as f:
                assert f["blocks"].shape == (2, 16, 16, 8)
                assert f.attrs["setting"] == s
                assert np.isfinite(f["blocks"][:]).all()
        wide = pd.read_csv(r / "metrics" / f"entropy_{s}_seed_0.csv")
        assert wide.checkpoint.tolist() == ["epoch_1", "final"]
        assert list(wide.columns[1:]) == ["Layer_1", "Layer_2"]
    with h5py.File(r / "activations/teacher.h5") as f:
        assert f["blocks"].shape == (3, 16, 16, 16)
    layers = pd.read_csv(r / "metrics/layers.csv")
    assert set(layers.metric) == {"frequency_intensity", "entropy", "activation_magnitude", "gradient_magnitude"}
    assert layers.value.notna().all() and (layers.value >= 0).all()
    ent = layers[layers.metric == "entropy"].value
    assert (ent > 0).all() and (ent < np.log2(100)).all()
    assert (layers.ci_low <= layers.value + 1e-12).all() and (layers.value <= layers.ci_high + 1e-12).all()
    assert len(layers) == (3 + 4 * 2 * 2) * 4
    spectra = pd.read_csv(r / "metrics/spectra.csv")
    assert spectra.freq.between(0, 0.5, inclusive="left").all()
    acc = pd.read_csv(r / "metrics/accuracy.csv")
    assert set(acc.setting) == {"teacher", *settings}
    assert acc.final_acc1.between(0, 100).all()
    summary = pd.read_csv(r / "metrics/accuracy_summary.csv").set_index("setting")
    assert summary.loc["logit", "delta_vs_logit"] == 0
    for png in (r / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert len(list((r / "figures").glob("*.png"))) == 8 + 2 * len(settings)
    cka = pd.read_csv(r / "metrics/cka.csv")
    assert len(cka) == 4 * 2 * 2 * 3  # settings x checkpoints x student blocks x teacher blocks
    assert cka.cka.between(0, 1 + 1e-9).all()
    phases = pd.read_csv(r / "metrics/phases.csv")
    assert len(phases) == 1 + 4 * 2 and set(phases.min_layer) <= {1, 2, 3}
    enc = pd.read_csv(r / "metrics/encoding.csv")
    assert set(enc.measure) == {"svd_dim", "pca_dim", "sep_dim", "sep_fraction", "sep_perm_shift"}
    claims = (r / "claims.md").read_text()
    assert "C1" in claims and "C5" in claims and "inconclusive" in claims
    assert (r / "logs/pretrain_teacher.log").is_file()
    assert (r / "benchmarks/pretrain_teacher.tsv").is_file()
    assert not list(r.rglob("*.tmp"))


def test_second_run_has_nothing_to_do(finished_run):
    assert planned_jobs(finished_run) == {}
    out = snakemake(finished_run, "--cores", "2").stdout + snakemake(finished_run, "--cores", "2").stderr
    assert "Nothing to be done" in out


def test_report_builds(finished_run):
    snakemake(finished_run, "--report", "results/report.html")
    html = (finished_run / "results/report.html").read_text(errors="replace")
    assert "teacher_entropy.png" in html and "U-shape" in html
