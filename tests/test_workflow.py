"""End-to-end: the real Snakefile on the tiny config, in a temporary directory."""
import contextlib
import datetime
import json
import re

import h5py
import numpy as np
import pandas as pd
import pytest

from helpers import TINY, log_lines, make_workdir, planned_jobs, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = make_workdir(tmp_path_factory.mktemp("e2e"), TINY)
    with pytest.MonkeyPatch.context() as mp:  # two GPUs' slots (distdyn.slots): on CPU they only set a variable
        mp.setenv("DISTDYN_GPU_IDS", "0,1")
        snakemake(workdir, "--cores", "2", "--resources", "gpu=2")
    return workdir


def test_every_output_exists_and_is_sane(finished_run):
    r = finished_run / "results"
    settings = ["baseline", "logit", "spectral_last", "projector_first"]
    assert (r / "teacher/final.pt").is_file() and (r / "teacher/probe_indices.csv").is_file()
    teacher_log = log_lines(r / "teacher/log.jsonl")
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
    assert set(layers.metric) == {"frequency_intensity", "entropy", "entropy_global", "entropy_per_layer",
                                  "activation_magnitude", "gradient_magnitude", "outlier_ratio", "outlier_channels"}
    assert layers.value.notna().all() and (layers.value >= 0).all()
    ent = layers[layers.metric.str.startswith("entropy")].value
    assert (ent > 0).all() and (ent < np.log2(100)).all()
    by_metric = layers.set_index(["model", "layer", "metric"]).value.unstack("metric")
    assert (by_metric.entropy == by_metric.entropy_global).all()  # the default range is the file-wide one
    assert (by_metric.outlier_ratio >= 1).all() and by_metric.outlier_channels.between(0, 16).all()
    means = layers[~layers.metric.isin(["outlier_ratio", "outlier_channels"])]  # intervals of means hold the mean
    assert (means.ci_low <= means.value + 1e-12).all() and (means.value <= means.ci_high + 1e-12).all()
    assert (layers.ci_low <= layers.ci_high).all()
    assert len(layers) == (3 + 4 * 2 * 2) * 8
    spectra = pd.read_csv(r / "metrics/spectra.csv")
    assert spectra.freq.between(0, 0.5, inclusive="left").all()
    acc = pd.read_csv(r / "metrics/accuracy.csv")
    assert set(acc.setting) == {"teacher", *settings}
    assert acc.final_acc1.between(0, 100).all()
    summary = pd.read_csv(r / "metrics/accuracy_summary.csv").set_index("setting")
    assert summary.loc["logit", "delta_vs_logit"] == 0
    for png in (r / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert len(list((r / "figures").glob("*.png"))) == 9 + 2 * len(settings)
    cka = pd.read_csv(r / "metrics/cka.csv")
    assert len(cka) == 4 * 2 * 2 * 3  # settings x checkpoints x student blocks x teacher blocks
    assert cka.cka.between(0, 1 + 1e-9).all()
    phases = pd.read_csv(r / "metrics/phases.csv")
    assert len(phases) == 1 + 4 * 2 and set(phases.min_layer) <= {1, 2, 3}
    enc = pd.read_csv(r / "metrics/encoding.csv")
    assert set(enc.measure) == {"svd_dim", "pca_dim", "sep_dim", "sep_fraction", "sep_perm_shift"}
    claims = (r / "claims.md").read_text()
    assert "C1" in claims and "C5" in claims and "inconclusive" in claims
    with np.load(r / "metrics/val_correct.npz") as f:  # each student's final per-image correctness
        assert sorted(f.files) == sorted(f"{s}/seed_0" for s in settings)
        assert 100 * f["logit/seed_0"].mean() == pytest.approx(acc.set_index("setting").final_acc1["logit"])
    # one seed: McNemar's test of the two final models beside the one-seed verdict
    assert "McNemar's exact test of the two final models on the same" in claims
    assert (r / "logs/pretrain_teacher.log").is_file()
    assert (r / "benchmarks/pretrain_teacher.tsv").is_file()
    assert not list(r.rglob("*.tmp"))


def test_gpu_jobs_that_ran_together_had_different_gpus(finished_run):
    """The study's training and dump jobs under `--resources gpu=2` with two GPUs: each log's device line names
    one of them, and two jobs whose lines show them running at the same time name different ones."""
    logs = finished_run / "results/logs"
    jobs = []
    for log in [logs / "pretrain_teacher.log", *logs.glob("distill_group/*.log"), *logs.glob("dump_activations/*")]:
        m = re.search(r"^\[distdyn (\d+):(\d+):(\d+)\] .*CUDA_VISIBLE_DEVICES=([^)]*)\)", log.read_text(), re.M)
        assert m, log
        end = datetime.datetime.fromtimestamp(log.stat().st_mtime)  # its last write: the job held its GPU until then
        start = end.replace(hour=int(m[1]), minute=int(m[2]), second=int(m[3]), microsecond=0)  # and from then
        start -= datetime.timedelta(days=start > end)  # (a job across midnight)
        jobs.append((log.name, m[4], start.timestamp(), end.timestamp()))
    assert len(jobs) == 7 and {gpu for _, gpu, _, _ in jobs} == {"0", "1"}, jobs
    # the device line's time is whole seconds: +1 makes a pair's overlap certain
    together = [(a, b) for i, a in enumerate(jobs) for b in jobs[i + 1:] if a[2] + 1 < b[3] and b[2] + 1 < a[3]]
    assert together and all(a[1] != b[1] for a, b in together), (together, jobs)


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
# A student that needs the teacher trains in its seed's group job (distill_group, which skips the
# stored students) and is restored by its own job (restore_student, a local rule without GPU).
ONE_STUDENT = {"distill_group": 1, "restore_student": 1, "dump_activations": 1, "compute_metrics": 1, "cka": 1}


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


def test_changed_loss_weight_reruns_that_setting_and_aggregates(rerun_dir):
    def change(cfg):
        next(s for s in cfg["settings"] if s["name"] == "spectral_last")["feature_weight"] = 0.5

    _edit_config(rerun_dir, change)
    assert _planned(rerun_dir) == {**ONE_STUDENT, **AGGREGATES}
    out = snakemake(rerun_dir, "-n", "--cores", "2").stdout
    # what the planned jobs make (the accuracy tables read every final.pt, so inputs name them all)
    made = " ".join(line for line in out.splitlines() if line.strip().startswith("output:"))
    assert "results/students/spectral_last/seed_0/final.pt" in made
    assert "results/students/logit/seed_0/final.pt" not in made


STUDENTS = ["baseline", "logit", "spectral_last", "projector_first"]


def _student_files(workdir):
    """Every file of every student's output folder: its bytes, inode and mtime."""
    return {p: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
            for s in STUDENTS for p in sorted((workdir / "results/students" / s / "seed_0").iterdir())}


def test_changed_loss_weight_trains_only_that_setting_and_leaves_the_others_untouched(rerun_dir):
    """The group job of seed 0 re-runs (its members' specs changed) but trains only spectral_last: the
    other students are in the store under their unchanged keys, and their files are not rewritten."""
    before = _student_files(rerun_dir)

    def change(cfg):
        next(s for s in cfg["settings"] if s["name"] == "spectral_last")["feature_weight"] = 0.5

    _edit_config(rerun_dir, change)
    snakemake(rerun_dir, "--cores", "2", *(f"results/students/{s}/seed_0/final.pt" for s in STUDENTS))
    after = _student_files(rerun_dir)
    assert after.keys() == before.keys()
    changed = {p for p in before if after[p] != before[p]}
    assert changed == {p for p in before if "spectral_last" in p.parts}
    assert all(after[p][0] != before[p][0] for p in changed)  # new weights, new log lines
    ready = [json.loads(p.read_text()) for p in sorted((rerun_dir / "results/students/shared/seed_0").iterdir())]
    assert {r["name"]: r["status"] for r in ready} == {
        "logit": "stored", "spectral_last": "trained", "projector_first": "stored"}  # one file each, stale ones gone
    group_log = (rerun_dir / "results/logs/distill_group/seed_0.log").read_text()
    assert "sharing one teacher forward: spectral_last\n" in group_log
    own_log = (rerun_dir / "results/logs/restore_student/spectral_last_seed_0.log").read_text()
    assert "restored spectral_last seed 0" in own_log and "spectral_last seed 0: epoch 2:" not in own_log
    assert "epoch 2: loss" in own_log  # the student's own lines of the group job, without its prefix
    assert _planned(rerun_dir) == {k: v for k, v in {**ONE_STUDENT, **AGGREGATES}.items()
                                   if k not in ("distill_group", "restore_student")}


SHARED = ["logit", "spectral_last", "projector_first"]  # the students that read the teacher
STORE = "results/.resume/students/done"


def _digests(workdir, folder):
    import hashlib

    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((workdir / folder).rglob("*")) if p.is_file()}


@pytest.fixture
def linked_copy(finished_run, tmp_path):
    """A copy of the finished run as `cp -a` makes it: files that are one file (hard links) stay one file."""
    import subprocess

    dst = tmp_path / "linked"
    subprocess.run(["cp", "-a", str(finished_run), str(dst)], check=True)
    return dst


def test_a_changed_teacher_retrains_every_student_that_reads_it_and_only_those(linked_copy):
    """teacher.train.epochs changed: the teacher and the three students that read it train again (the group
    job finds their stored runs distilled from the old teacher); the baseline's files are not rewritten, and
    what is left to do is exactly what reads the new teacher or the new students. Then the teacher's final.pt
    overwritten in place with something else: asking for a student reads the teacher and fails in one line
    instead of restoring the old run."""
    import torch

    wd = linked_copy
    before = _student_files(wd)
    _edit_config(wd, lambda cfg: cfg["teacher"]["train"].update(epochs=3))
    snakemake(wd, "--cores", "2", *(f"results/students/{s}/seed_0/final.pt" for s in STUDENTS))
    after = _student_files(wd)
    changed = {p.parts[-3] for p in before if after[p] != before[p]}
    assert changed == set(SHARED)
    assert all(after[p][0] != before[p][0] for p in before if p.name == "final.pt" and p.parts[-3] in SHARED)
    group_log = (wd / "results/logs/distill_group/seed_0.log").read_text()
    assert f"sharing one teacher forward: {', '.join(SHARED)}\n" in group_log and "not trained again" not in group_log
    assert _planned(wd) == {"dump_model_activations": 1, "dump_activations": 3, "compute_model_metrics": 1,
                            "compute_metrics": 3, "cka": 4, **AGGREGATES}
    torch.save(torch.zeros(3), wd / "results/teacher/final.pt")  # in place, as a script would
    proc = snakemake(wd, "--cores", "2", "results/students/logit/seed_0/final.pt", check=False)
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert errors and "results/teacher/final.pt: expected a dict checkpoint" in errors[0], out[-3000:]


def _damage_in_place(workdir):
    """The five damages of an output that a script or editor makes by writing into the file itself."""
    import torch

    d = workdir / "results/students"
    torch.save(torch.zeros(3), d / "logit/seed_0/final.pt")  # not a dict
    torch.save({"epoch": 1}, d / "spectral_last/seed_0/epoch_1.pt")  # no weights
    with open(d / "projector_first/seed_0/log.jsonl", "a") as f:
        f.write('{"epoch": 3, "te')  # a corrupt line
    with open(d / "spectral_last/seed_0/log.jsonl", "r+") as f:
        f.truncate(40)
    with open(d / "logit/seed_0/log.jsonl", "w"):
        pass  # emptied
    return ["logit/seed_0/final.pt", "spectral_last/seed_0/epoch_1.pt", "projector_first/seed_0/log.jsonl",
            "spectral_last/seed_0/log.jsonl", "logit/seed_0/log.jsonl"]


def test_outputs_edited_in_place_leave_the_store_intact_and_are_restored_from_it(linked_copy):
    """Each damaged output leaves the store's files byte-identical; deleted (as the readers' error lines say),
    the next run restores the good files from the store, training nothing."""
    wd = linked_copy
    store, outputs = _digests(wd, STORE), _digests(wd, "results/students")
    damaged = _damage_in_place(wd)
    assert _digests(wd, STORE) == store
    assert all(_digests(wd, "results/students")[f"results/students/{f}"] != outputs[f"results/students/{f}"]
               for f in damaged)
    for f in damaged:
        (wd / "results/students" / f).unlink()
    proc = snakemake(wd, "--cores", "2", *(f"results/students/{f}" for f in damaged))
    assert _digests(wd, "results/students") == outputs and _digests(wd, STORE) == store
    assert "rule distill_group" not in proc.stdout and "distdyn.train --spec" not in proc.stdout


def test_share_teacher_off_trains_every_student_in_its_own_job(tmp_path):
    workdir = make_workdir(tmp_path, {**TINY, "student": {**TINY["student"], "share_teacher": False}})
    assert _planned(workdir) == {**{k: v for k, v in ALL_JOBS.items() if k not in ("distill_group", "restore_student")},
                                 "distill_student": 4, "build_kernels": 1}
    out = snakemake(workdir, "-n", "-p", "--cores", "2").stdout
    assert "--group" not in out and "results/students/shared" not in out


def test_added_setting_runs_only_its_jobs_and_aggregates(rerun_dir):
    _edit_config(rerun_dir, lambda cfg: cfg["settings"].append({"name": "mse_last", "method": "mse", "layers": "last"}))
    assert _planned(rerun_dir) == {**ONE_STUDENT, **AGGREGATES}
    out = snakemake(rerun_dir, "-n", "--cores", "2").stdout
    assert "results/students/mse_last/seed_0/final.pt" in out


# ---------------------------------------------------------------- code changes: content fingerprints

ALL_JOBS = {"select_probe": 1, "pretrain_teacher": 1, "distill_group": 1, "distill_student": 1, "restore_student": 3,
            "dump_model_activations": 1, "dump_activations": 4, "compute_model_metrics": 1, "compute_metrics": 4,
            "cka": 4, **AGGREGATES}
# The metric engine's jobs and what reads their tables; CKA and encoding read only the dumps (distdyn.analysis
# does not import the engine), so they stay done.
METRIC_JOBS = {"compute_model_metrics": 1, "compute_metrics": 4,
               **{k: v for k, v in AGGREGATES.items() if k != "encoding"}}
KERNEL_JOBS = {"build_kernels": 1, **METRIC_JOBS}  # the kernel's source: built again, then the metrics


@pytest.fixture(scope="module")
def code_run(finished_run, tmp_path_factory):
    """One copy of the finished run for every code edit; each test puts back what it changed."""
    import shutil

    dst = tmp_path_factory.mktemp("code") / "run"
    shutil.copytree(finished_run, dst, symlinks=True)
    return dst


@contextlib.contextmanager
def _restored(paths):
    saved = {p: p.read_bytes() for p in paths}
    try:
        yield
    finally:
        for p, data in saved.items():
            p.write_bytes(data)


def _source_files(workdir):
    return sorted(p for p in (workdir / "workflow" / "distdyn").iterdir() if p.suffix in (".py", ".c"))


def _cosmetic_python(src: str) -> str:
    """The same code, reformatted (ast.unparse), every docstring changed or added, comments and blank lines added."""
    import ast

    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value,
                                                                                                    str):
                first.value.value = "Edited. " + first.value.value
            else:
                node.body.insert(0, ast.Expr(ast.Constant("An added docstring.")))
    lines = []
    for line in ast.unparse(tree).splitlines():
        lines.append(line)
        if line.rstrip().endswith(":"):
            lines += ["    # an added comment", ""]
    return "# edited: comments, docstrings, formatting\n\n\n" + "\n".join(lines) + "\n\n\n"


def _cosmetic_c(src: str) -> str:
    """The same C code, indented further, with comments and blank lines added (not inside a macro's continued lines)."""
    out = ["/* an added", "   block comment */", "// and a line comment", ""]
    for line in src.splitlines():
        out.append(f"  {line}" + (" // an added comment" if line.rstrip().endswith("{") else ""))
        if not line.endswith("\\"):
            out.append("")
    return "\n".join(out) + "\n"


def test_comment_docstring_format_edits_and_touch_plan_nothing(code_run):
    """Every distdyn module and the C source edited without a change of behaviour, and every
    source file of the workflow touched: nothing to do."""
    import os
    import time

    sources = _source_files(code_run)
    assert {p.name for p in sources} >= {"data.py", "losses.py", "kernels.py", "_kernels.c", "metrics.py", "plots.py"}
    with _restored(sources):
        for p in sources:
            p.write_text((_cosmetic_c if p.suffix == ".c" else _cosmetic_python)(p.read_text()))
        later = time.time() + 60
        for p in [code_run / "Snakefile", code_run / "config.yaml", *(code_run / "workflow").rglob("*")]:
            if p.is_file():
                os.utime(p, (later, later))
        assert _planned(code_run) == {}


def test_fresh_clone_with_the_finished_results_plans_nothing(finished_run, tmp_path):
    """The workflow's files with new times (as `git clone` writes them) elsewhere, results/ and
    .snakemake/ copied in with their times (`cp -a`)."""
    import shutil

    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("Snakefile", "config.yaml", "workflow", "profiles", "envs"):
        src = finished_run / name
        if src.is_dir():
            shutil.copytree(src, clone / name, copy_function=shutil.copy,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, clone / name)
    for name in ("results", ".snakemake"):
        shutil.copytree(finished_run / name, clone / name, symlinks=True)
    assert _planned(clone) == {}


@pytest.mark.parametrize("changed, planned", [
    ("_kernels.c", KERNEL_JOBS),
    ("metrics.py", METRIC_JOBS),
    ("analysis.py", {"cka": 4, "gather_cka": 1, "phases": 1, "encoding": 1, "plot": 1, "claims": 1}),
    ("plots.py", {"plot": 1}),
    ("claims/verdicts.py", {"claims": 1}),
    ("claims/claims.yaml", {"claims": 1}),  # the statements and paper numbers are part of its fingerprint
    # the dumps and all that reads them; not the accuracy tables (the logs and final.pt files): the metric
    # jobs read dumps through distdyn.dumps, which does not import the dump writer
    ("activations.py", {"select_probe": 1, "dump_model_activations": 1, "dump_activations": 4,
                        **{k: v for k, v in METRIC_JOBS.items() if k != "accuracy_tables"}, "cka": 4, "encoding": 1}),
    ("data.py", ALL_JOBS),
    # the teacher's loss goes through DistillationLoss too; the probe set does not use it
    ("losses.py", {k: v for k, v in ALL_JOBS.items() if k != "select_probe"}),
    # the method registry is the engine's (and the claims'): all the training; a method's module only its settings
    # (methods/spectral.py: test_method_change_reruns_its_setting_and_the_reason_names_the_file)
    ("methods/__init__.py", {k: v for k, v in ALL_JOBS.items() if k != "select_probe"}),
    ("methods/none.py", {**{k: v for k, v in ONE_STUDENT.items() if k not in ("distill_group", "restore_student")},
                         "distill_student": 1, **AGGREGATES}),
])
def test_behavioural_code_change_reruns_what_runs_that_code(code_run, changed, planned):
    path = code_run / "workflow" / "distdyn" / changed
    edit = "\nstatic const int distdyn_edit = 1;\n" if path.suffix == ".c" else "\nDISTDYN_EDIT = 1\n"
    with _restored([path]):
        path.write_text(path.read_text() + edit)
        assert _planned(code_run) == planned


def test_method_change_reruns_its_setting_and_the_reason_names_the_file(code_run):
    """Editing one method's module: only the settings using it train again (spectral_last in its seed's
    group job, which trains it alone); the reason names the method's file; the teacher stays."""
    path = code_run / "workflow" / "distdyn" / "methods" / "spectral.py"
    with _restored([path]):
        path.write_text(path.read_text() + "\nDISTDYN_EDIT = 1\n")
        proc = snakemake(code_run, "-n", "--cores", "2")
        assert _planned(code_run) == {**ONE_STUDENT, **AGGREGATES}
    out = proc.stdout + proc.stderr
    reasons = [line for line in out.splitlines() if "Params have changed" in line]
    assert len(reasons) == 1 and "results/students/spectral_last/seed_0/final.pt" in out  # its own job's
    before, now = (dict(re.findall(r"([\w./]+)=(\w+)", half)) for half in reasons[0].split(" now: "))
    assert [f for f in before if before[f] != now[f]] == ["methods/spectral.py"]


def test_a_new_method_reruns_nothing_until_a_setting_uses_it(code_run):
    """A new built-in method's module changes no fingerprint; a new setting with it runs only its jobs."""
    new = code_run / "workflow" / "distdyn" / "methods" / "halfmse.py"
    config = code_run / "config.yaml"
    mse = (code_run / "workflow" / "distdyn" / "methods" / "mse.py").read_text()
    with _restored([config]):
        new.write_text(mse.replace('name = "mse"', 'name = "halfmse"').replace("return pooled_mse_loss(fs, ft)",
                                                                             "return 0.5 * pooled_mse_loss(fs, ft)"))
        try:
            assert _planned(code_run) == {}
            _edit_config(code_run, lambda cfg: cfg["settings"].append(
                {"name": "halfmse_last", "method": "halfmse", "layers": "last"}))
            assert _planned(code_run) == {**ONE_STUDENT, **AGGREGATES}
        finally:
            new.unlink()


def test_kernel_change_reruns_metrics_and_the_reason_names_the_file(code_run):
    """A behavioural change to the metric kernel: the metric jobs and what they feed, no training,
    no dumps; `snakemake -n` gives each job's reason, the stage's file digests before and now."""
    path = code_run / "workflow" / "distdyn" / "kernels.py"
    with _restored([path]):
        path.write_text(path.read_text() + "\nDISTDYN_EDIT = 1\n")
        proc = snakemake(code_run, "-n", "--cores", "2")
    out = proc.stdout + proc.stderr
    start = re.search(r"^job\s+count$", out, re.M).end()
    table = out[start:out.index("total", start)]
    planned = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if rule != "all"}
    assert planned == KERNEL_JOBS
    reasons = [line for line in out.splitlines() if "reason: Params have changed" in line]
    assert len(reasons) >= 3  # build_kernels and jobs of the metrics module; the jobs after them give "updated input"
    for line in reasons:
        before, now = (dict(re.findall(r"([\w.]+)=(\w+)", half)) for half in line.split(" now: "))
        assert [f for f in before if before[f] != now[f]] == ["kernels.py"]


def test_every_rule_fingerprints_the_module_its_shell_runs(code_run):
    """Each rule's `params: code=code_fingerprint("distdyn.X")` names the module its command runs."""
    from distdyn.fingerprint import closure, rules_by_stage

    out = snakemake(code_run, "-n", "-p", "--forceall", "--cores", "2").stdout
    runs, rule = {}, None
    for line in out.splitlines():
        m = re.match(r"(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
        for module in re.findall(r"-m (distdyn\.\w+)", line):
            if module != "distdyn.slots":  # picks the job's GPUs, which change no number: in no fingerprint
                runs.setdefault(rule, set()).add(module)
    declared = {r: m for m, rules in rules_by_stage(code_run / "workflow" / "rules").items() for r in rules}
    assert len(runs) >= 15 and set(runs) <= set(declared), set(runs) - set(declared)
    for r, modules in runs.items():
        # the declared module, and only modules whose code its fingerprint covers (distill_student also
        # runs distdyn.store, which distdyn.train imports)
        covered = {f"distdyn.{p.stem}" for p in closure(declared[r], code_run / "workflow")}
        assert declared[r] in modules and modules <= covered, (r, modules, declared[r])
    assert runs["distill_student"] == {"distdyn.store", "distdyn.train"}
    assert runs["restore_student"] == {"distdyn.store"}


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_metric_jobs_take_a_gpu_only_when_asked(tmp_path, gpu):
    workdir = make_workdir(tmp_path, {**TINY, "metrics": {**TINY.get("metrics", {}), "gpu": gpu}})
    out = snakemake(workdir, "-n", "-p", "--cores", "2").stdout
    commands = [line for line in out.splitlines() if "-m distdyn.metrics results/activations" in line]
    assert commands and all(f"--gpu {int(gpu)} " in c for c in commands)
