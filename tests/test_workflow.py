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


# ---------------------------------------------------------------- incremental re-runs

AGGREGATES = {"gather_metrics": 1, "gather_cka": 1, "accuracy_tables": 1, "phases": 1, "encoding": 1,
              "plot": 1, "claims": 1}
ONE_STUDENT = {"distill_student": 1, "dump_activations": 1, "compute_metrics": 1, "cka": 1}


@pytest.fixture
def rerun_dir(finished_run, tmp_path):
    """A copy of the finished run (outputs, mtimes and Snakemake metadata) to modify."""
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(finished_run, dst, symlinks=True)
    return dst


def _planned(workdir):
    jobs = planned_jobs(workdir)
    jobs.pop("all", None)
    return jobs


def _edit_config(workdir, change):
    import yaml

    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    change(cfg)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _edit_code(workdir, module):
    path = workdir / "workflow" / "distdyn" / f"{module}.py"
    path.write_text(path.read_text() + "\n# edited\n")


def test_changed_loss_weight_reruns_that_setting_and_aggregates(rerun_dir):
    def change(cfg):
        next(s for s in cfg["settings"] if s["name"] == "spectral_last")["feature_weight"] = 0.5

    _edit_config(rerun_dir, change)
    assert _planned(rerun_dir) == {**ONE_STUDENT, **AGGREGATES}
    out = snakemake(rerun_dir, "-n", "--cores", "2").stdout
    assert "results/students/spectral_last/seed_0/final.pt" in out
    assert "results/students/logit/seed_0/final.pt" not in out


def test_added_setting_runs_only_its_jobs_and_aggregates(rerun_dir):
    _edit_config(rerun_dir, lambda cfg: cfg["settings"].append({"name": "mse_last", "method": "mse", "layers": "last"}))
    assert _planned(rerun_dir) == {**ONE_STUDENT, **AGGREGATES}
    out = snakemake(rerun_dir, "-n", "--cores", "2").stdout
    assert "results/students/mse_last/seed_0/final.pt" in out


def test_edited_metrics_code_reruns_metrics_tables_figures_only(rerun_dir):
    _edit_code(rerun_dir, "metrics")
    assert _planned(rerun_dir) == {"compute_metrics": 4, "compute_teacher_metrics": 1, "cka": 4, **AGGREGATES}


def test_edited_plotting_code_reruns_figures_only(rerun_dir):
    _edit_code(rerun_dir, "plots")
    assert _planned(rerun_dir) == {"plot": 1}


def test_edited_loss_code_reruns_students_not_the_teacher(rerun_dir):
    _edit_code(rerun_dir, "losses")
    planned = _planned(rerun_dir)
    assert planned == {"distill_student": 4, "dump_activations": 4, "compute_metrics": 4, "cka": 4, **AGGREGATES}
    assert "pretrain_teacher" not in planned and "dump_teacher_activations" not in planned


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_metric_jobs_take_a_gpu_only_when_asked(tmp_path, gpu):
    from conftest import TINY

    workdir = make_workdir(tmp_path, {**TINY, "metrics": {**TINY.get("metrics", {}), "gpu": gpu}})
    out = snakemake(workdir, "-n", "-p", "--cores", "2").stdout
    commands = [line for line in out.splitlines() if "-m distdyn.metrics results/activations" in line]
    assert commands and all(f"--gpu {int(gpu)} " in c for c in commands)
