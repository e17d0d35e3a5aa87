"""A training job killed mid-run resumes from its saved state and ends where an uninterrupted run ends."""
import copy
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distdyn import train
from distdyn.config import load_config, student_spec
from distdyn.resume import Resume
from helpers import TIMING, TINY, log_lines, package_env, same_weights, student_reference, train_command


@pytest.fixture(scope="module")
def slow_setup(tmp_path_factory):
    """Epochs long enough (about a second) to kill a job between two of them."""
    raw = copy.deepcopy(TINY)
    raw["data"]["synthetic"]["size"] = 3000
    raw["student"]["train"].update(epochs=5, checkpoint_every=2)
    tmp = tmp_path_factory.mktemp("resume")
    spec, _ = student_reference(raw, tmp)
    return spec, tmp


def _kill_after(cmd, log: Path, epochs: int, sig: int) -> int:
    proc = subprocess.Popen(cmd, env=package_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) >= epochs:
            break
        if proc.poll() is not None:
            raise AssertionError(f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_identical_weights(slow_setup, sig):
    spec, tmp = slow_setup
    out, resume = tmp / f"killed_{sig}", tmp / f"resume_{sig}" / "state.pt"
    cmd = train_command(spec, out, tmp / "teacher" / "final.pt", resume)
    rc = _kill_after(cmd, out / "log.jsonl", 3, sig)
    assert rc != 0
    assert resume.is_file() and not (out / "final.pt").exists()
    # What Snakemake does to a failed job's outputs before the rerun.
    for p in out.glob("*"):
        p.unlink()
    done = subprocess.run(cmd, env=package_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr
    assert same_weights(out / "final.pt", tmp / "reference" / "final.pt")
    assert same_weights(out / "epoch_2.pt", tmp / "reference" / "epoch_2.pt")  # restored from the resume dir
    lines, ref = log_lines(out / "log.jsonl"), log_lines(tmp / "reference" / "log.jsonl")
    assert [l["test_acc1"] for l in lines] == [l["test_acc1"] for l in ref]
    assert [l["train_loss"] for l in lines] == [l["train_loss"] for l in ref]
    assert not resume.exists()  # cleared after a finished run


@pytest.mark.slow
def test_killed_run_rerun_with_another_teacher_starts_from_scratch(slow_setup):
    """The teacher's content is in the resume state's key: a student killed mid-run whose teacher changed
    (retrained, replaced) does not continue the old teacher's half-run."""
    import torch

    from distdyn.models import atomic_save, load_checkpoint

    spec, tmp = slow_setup
    out, resume, teacher = tmp / "killed_other_teacher", tmp / "resume_other_teacher" / "state.pt", tmp / "teacher"
    killed = _kill_after(train_command(spec, out, teacher / "final.pt", resume), out / "log.jsonl", 2, signal.SIGKILL)
    assert killed != 0
    assert resume.is_file()
    ckpt = load_checkpoint(teacher / "final.pt")
    other = tmp / "other_teacher" / "final.pt"
    atomic_save({**ckpt, "model": {k: v * 1.01 if torch.is_floating_point(v) else v for k, v in ckpt["model"].items()}},
                other)
    for p in out.glob("*"):
        p.unlink()
    # The rerun starts at epoch 1 (resumed, it would start at 3); one epoch is enough to tell.
    rerun = subprocess.Popen(train_command(spec, out, other, resume), env=package_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    log = out / "log.jsonl"
    while not (log.is_file() and log.read_text().strip()) and rerun.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    rerun.kill()
    err = rerun.communicate(timeout=60)[1]
    assert "is stale" in err and "resuming from" not in err, err[-2000:]
    assert [l["epoch"] for l in log_lines(log)] == [1]  # resumed, its first write holds 1, 2, 3


def test_stale_resume_state_is_ignored(tiny_cfg, tmp_path, capsys):
    spec = student_spec(tiny_cfg, "baseline", 0)
    spec["train"]["epochs"] = 2
    state = tmp_path / "state.pt"
    resume = Resume(str(state), "some-other-config")
    resume.save({"model": {}, "epoch": 1})
    train.run(spec, tmp_path / "out", resume_path=str(state))
    err = capsys.readouterr().err
    assert "is stale" in err and "ignored" in err
    assert len((tmp_path / "out" / "log.jsonl").read_text().splitlines()) == 2


@pytest.fixture(scope="module")
def group_setup(slow_setup):
    """Two students of seed 0 that train together, each with a reference trained alone."""
    spec, tmp = slow_setup
    logit = {**spec, "name": "logit", "setting": {**spec["setting"], "name": "logit", "method": "logit", "pairs": []}}
    train.run(logit, tmp / "reference_logit", teacher_path=str(tmp / "teacher" / "final.pt"))
    return {"spectral_last": (spec, tmp / "reference"), "logit": (logit, tmp / "reference_logit")}, tmp


@pytest.mark.slow
@pytest.mark.parametrize("sig, drop", [(signal.SIGKILL, None), (signal.SIGTERM, "logit")],
                         ids=["SIGKILL", "SIGTERM-one-member-from-scratch"])
def test_killed_group_job_resumes_every_member_to_identical_weights(group_setup, sig, drop):
    """A group job (one teacher forward for both students) killed after two epochs resumes each member
    from its own resume state; with `drop`, that member's state is lost and it trains from scratch,
    alone until it has caught up with the other. Each member, restored from the store into its output
    folder, equals its run alone: weights of every checkpoint, and log lines."""
    members_ref, tmp = group_setup
    run = tmp / f"group_{sig}"
    store = run / "store"
    members = [{"spec": spec, "out": str(run / "out" / name), "resume": str(run / "resume" / f"{name}.pt"),
                "ready": str(run / "ready" / f"{name}.json")} for name, (spec, _) in members_ref.items()]
    cmd = [sys.executable, "-m", "distdyn.train", "--group", json.dumps(members), "--store", str(store),
           "--code", "test", "--teacher", str(tmp / "teacher" / "final.pt")]
    from distdyn.store import entry_dir, staging_dir

    entries = {m["spec"]["name"]: entry_dir(store, m["spec"], "test") for m in members}
    rc = _kill_after(cmd, staging_dir(entries["spectral_last"]) / "log.jsonl", 2, sig)
    assert rc != 0 and not (run / "ready").exists()
    assert all((run / "resume" / f"{name}.pt").is_file() for name in members_ref)
    if drop:
        (run / "resume" / f"{drop}.pt").unlink()
    done = subprocess.run(cmd, env=package_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("resumed after epoch") == (1 if drop else 2)
    assert json.loads((run / "ready" / "logit.json").read_text())["status"] == "trained"
    for name, (_, reference) in members_ref.items():
        out = run / "out" / name
        restored = subprocess.run([sys.executable, "-m", "distdyn.store", "restore", str(entries[name]), "--out",
                                   str(out), "--teacher", str(tmp / "teacher" / "final.pt")],  # restored for it only
                                  env=package_env(), capture_output=True, text=True, timeout=60)
        assert restored.returncode == 0, restored.stderr
        for f in ("epoch_2.pt", "epoch_4.pt", "final.pt"):
            assert same_weights(out / f, reference / f), (name, f)
        lines, ref = log_lines(out / "log.jsonl"), log_lines(reference / "log.jsonl")
        assert [(l["train_loss"], l["test_acc1"]) for l in lines] == [(l["train_loss"], l["test_acc1"]) for l in ref]
        assert not (run / "resume" / f"{name}.pt").exists()  # cleared once published


def test_cpu_resume_state_of_another_thread_count_starts_over(tmp_path, capsys):
    """The thread count is no part of the key, but it changes CPU numbers: a CPU run resumes only a state
    saved with its own count; on CUDA any count is accepted."""
    from distdyn.store import numerics

    state = tmp_path / "state.pt"
    Resume(str(state), "key", numerics("cpu", 1)).save({"model": {}, "epoch": 1})
    assert Resume(str(state), "key", numerics("cpu", 1)).load()["numerics"] == {"device": "cpu", "threads": 1}
    assert Resume(str(state), "key", numerics("cpu", 2)).load() is None
    err = capsys.readouterr().err
    assert "is not continued: it was computed with 1 CPU threads, this job has 2" in err and "from scratch" in err
    assert Resume(str(state), "key", numerics("cuda", 2)).load() is not None


def test_store_entry_of_another_cpu_thread_count_is_not_restored(tmp_path, capsys):
    """`distdyn.store restore --threads N --gpu G`: an entry computed on the CPU with another thread count is
    not restored into a CPU job (its training command runs instead); into a GPU job, or with the same count, it is."""
    from distdyn import store

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "final.pt").write_bytes(b"weights")
    entry = tmp_path / "store" / "logit_seed_0" / "key"
    entry.parent.mkdir(parents=True)
    store.publish(staging, entry, ["final.pt"], ["trained"], {"name": "logit", "seed": 0, "key": "key",
                                                                "teacher": None, "numerics": store.numerics("cpu", 1)})
    assert store.restore(entry, tmp_path / "a", None, "cpu", 2) == store.NOT_STORED
    assert "is not restored: it was computed with 1 CPU threads, this job has 2" in capsys.readouterr().err
    assert not (tmp_path / "a" / "final.pt").exists()
    assert store.main(["restore", str(entry), "--out", str(tmp_path / "b"), "--threads", "1"]) == 0
    assert store.main(["restore", str(entry), "--out", str(tmp_path / "c"), "--threads", "2"]) == store.NOT_STORED
    assert store.restore(entry, tmp_path / "d", None, "cuda", 2) == 0
    assert store.restore(entry, tmp_path / "e", None, lambda: "cuda", 2) == 0  # a GPU job's device, asked lazily
    assert all((tmp_path / d / "final.pt").read_bytes() == b"weights" for d in "bde")


@pytest.fixture(scope="module")
def fashion_setup(tmp_path_factory):
    """A baseline student (no teacher) on Fashion-MNIST files, as the rules run it: its spec without data
    path, loader workers and threads (run_spec), those as flags; and an uninterrupted reference run."""
    from distdyn.config import run_spec
    from helpers import fake_fashion

    tmp = tmp_path_factory.mktemp("tuning")
    raw = copy.deepcopy(TINY)
    raw["data"] = {"source": "fashion_mnist", "root": str(fake_fashion(tmp / "mount_a", train=3000, test=100)),
                   "img_size": 8}
    raw["student"]["train"].update(epochs=5, checkpoint_every=2)
    spec = run_spec(student_spec(load_config(raw), "baseline", 0))
    ref = subprocess.run(_job(spec, tmp / "reference", tmp / "reference_state.pt", tmp / "mount_a"),
                         env=package_env(), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    return spec, tmp


def _job(spec, out, resume, root, workers=0, threads=1):
    """The training command as the distill_student rule writes it: the spec of its params, tuning as flags."""
    return [sys.executable, "-m", "distdyn.train", "--spec", json.dumps(spec), "--out", str(out), "--resume",
            str(resume), "--threads", str(threads), "--num-workers", str(workers), "--data-root", str(root)]


@pytest.mark.slow
def test_resume_keeps_its_state_with_other_workers_and_a_moved_data_folder_not_other_threads(fashion_setup):
    """A run killed after two epochs, whose data folder then moves (a new mount point) and whose loader
    workers change, resumes and ends with the uninterrupted run's weights, bit for bit; rerun with another
    CPU thread count, which changes CPU numbers, it starts over."""
    spec, tmp = fashion_setup
    out, state = tmp / "moved", tmp / "moved_state" / "state.pt"
    assert _kill_after(_job(spec, out, state, tmp / "mount_a"), out / "log.jsonl", 2, signal.SIGKILL) != 0
    assert state.is_file()
    (tmp / "mount_a").rename(tmp / "mount_b")
    try:
        for p in out.glob("*"):
            p.unlink()
        done = subprocess.run(_job(spec, out, state, tmp / "mount_b", workers=2), env=package_env(),
                              capture_output=True, text=True, timeout=300)
    finally:
        (tmp / "mount_b").rename(tmp / "mount_a")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr
    for f in ("epoch_2.pt", "epoch_4.pt", "final.pt"):
        assert same_weights(out / f, tmp / "reference" / f), f
    assert log_lines(out / "log.jsonl", drop=TIMING) == log_lines(tmp / "reference" / "log.jsonl", drop=TIMING)
    # The same run killed after two epochs and rerun with 2 CPU threads starts from epoch 1.
    out, state = tmp / "threads", tmp / "threads_state" / "state.pt"
    assert _kill_after(_job(spec, out, state, tmp / "mount_a"), out / "log.jsonl", 2, signal.SIGKILL) != 0
    for p in out.glob("*"):
        p.unlink()
    rerun = subprocess.Popen(_job(spec, out, state, tmp / "mount_a", threads=2), env=package_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, log = time.time() + 120, out / "log.jsonl"
    while not (log.is_file() and log.read_text().strip()) and rerun.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    rerun.kill()
    err = rerun.communicate(timeout=60)[1]
    assert "it was computed with 1 CPU threads, this job has 2" in err and "resuming from" not in err, err[-2000:]
    assert [l["epoch"] for l in log_lines(log)] == [1]  # resumed, its first write would hold 1, 2, 3


@pytest.mark.slow
def test_tuning_keys_and_a_moved_data_folder_rerun_nothing(tmp_path):
    """Snakemake's triggers: the rules' params hold no CPU threads, loader workers nor data path (the jobs
    get those as flags from {threads} and the environment the Snakefile sets, and the code trigger compares
    the shell command's template, not the formatted command), so after a finished run a moved data folder
    (the same files) with other workers and threads leaves nothing to do; a real change (the teacher's lr)
    re-runs the teacher."""
    import yaml

    from helpers import fake_imagefolder, make_workdir, snakemake

    raw = copy.deepcopy(TINY)
    raw["data"] = {"source": "imagefolder", "root": "data/a", "img_size": 8, "num_workers": 0}
    raw["probe"] = {"size": 6}
    raw["teacher"]["train"]["epochs"] = 1
    wd = make_workdir(tmp_path / "wd", raw)
    fake_imagefolder(wd / "data" / "a", per_class=(6, 3), size=(40, 36))
    targets = ("results/teacher/final.pt", "results/teacher/probe_indices.csv")  # what reads the data's path
    snakemake(wd, "--cores", "1", *targets)
    (wd / "data" / "a").rename(wd / "data" / "b")
    raw["data"].update(root="data/b", num_workers=2)
    raw["teacher"]["train"]["threads"] = 2
    (wd / "config.yaml").write_text(yaml.safe_dump(raw))
    dry = snakemake(wd, *targets, "-n", "--cores", "1")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    raw["teacher"]["train"]["lr"] = 0.002
    (wd / "config.yaml").write_text(yaml.safe_dump(raw))
    dry = snakemake(wd, *targets, "-n", "--cores", "1", "--quiet", "rules")
    assert re.search(r"^pretrain_teacher\s+1$", dry.stdout, flags=re.M) and "select_probe" not in dry.stdout, dry.stdout
