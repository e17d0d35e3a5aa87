"""Training longer than a job may run (distdyn.segments): a job stops before its time limit, the next
attempt resumes, the weights equal an uninterrupted run's; a retry after an error stops at once."""
import copy
import os
import subprocess
import time

import pytest

from distdyn.segments import MARGIN_S, SEGMENT_END, Attempts, Deadline, parse_time
from helpers import TINY, log_lines, package_env, same_weights, student_reference, train_command


def test_end_times_in_slurm_and_epoch_form():
    assert parse_time("1700000000") == 1700000000.0
    local = time.mktime(time.strptime("2026-12-06T05:12:33", "%Y-%m-%dT%H:%M:%S"))  # squeue %e: local time
    assert parse_time("2026-12-06T05:12:33") == local
    assert parse_time("N/A") is None and parse_time("Unknown") is None and parse_time("") is None


def test_an_epoch_runs_only_when_it_ends_before_the_limit():
    now = [1000.0]
    deadline = Deadline(end=1000.0 + 100, clock=lambda: now[0])
    assert deadline.allows()  # the attempt's first epoch always runs: a job makes progress
    deadline.record(72.0)
    assert deadline.allows()  # 1.25 x 72 + 10 s margin = 100 s: it just fits
    deadline.record(73.0)
    assert not deadline.allows()  # 1.25 x 73 + 10 s margin > 100 s left
    deadline.record(20.0)
    assert not deadline.allows()  # the longest epoch counts
    now[0] = 1000.0 - 100
    assert deadline.allows()
    assert Deadline(end=None).allows()
    assert MARGIN_S == 10.0


def test_a_retry_goes_on_after_a_segment_or_a_signal_and_stops_after_an_error(tmp_path):
    rec = Attempts(tmp_path / "job.attempt.json")
    assert rec.begin(1) is None
    rec.started(0)
    rec.progress(3)
    rec.end("segment")
    assert rec.begin(2) is None  # the next segment
    rec.started(3)
    rec.end("terminated")  # preempted before finishing an epoch
    assert rec.begin(3) is None
    rec.started(3)
    rec.end("terminated")  # again no epoch: an epoch is longer than the limit
    reason = rec.begin(4)
    assert reason and "longer than the job's time limit" in reason and "resources.max_runtime" in reason

    rec = Attempts(tmp_path / "failed.attempt.json")
    rec.begin(1)
    rec.end("failed", "error: data key 'data.root': no such folder")
    reason = rec.begin(2)
    assert reason.startswith("attempt 1 of this job failed: error: data key 'data.root'") and "not retried" in reason

    rec = Attempts(tmp_path / "oom.attempt.json")
    rec.begin(1)  # killed (out of memory) without a record of its end
    assert "out of memory" in rec.begin(2)

    rec = Attempts(tmp_path / "requeued.attempt.json")
    rec.begin(2)
    assert rec.begin(2) is None  # SLURM requeued the same attempt: it goes on
    assert rec.begin(1) is None  # a new snakemake run starts again at attempt 1


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    raw = copy.deepcopy(TINY)
    raw["student"]["train"].update(epochs=3, checkpoint_every=2)
    tmp = tmp_path_factory.mktemp("segments")
    spec, teacher = student_reference(raw, tmp)
    return spec, teacher, tmp


def _attempt(cmd: list[str], attempt: int, end: float | None) -> subprocess.CompletedProcess:
    env = package_env(**({"DISTDYN_END_TIME": str(end)} if end is not None else {}))
    return subprocess.run([*cmd, "--attempt", str(attempt)], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_run_under_a_time_limit_finishes_in_segments_with_the_weights_of_one_run(setup):
    """Every attempt's allocation ends now: each trains its first epoch (a job always makes progress), then
    stops before the limit; three attempts make the three epochs, bit-identical to the uninterrupted run."""
    spec, teacher, tmp = setup
    out, resume = tmp / "segmented", tmp / "resume" / "state.pt"
    cmd = train_command(spec, out, teacher, resume)
    codes = []
    for attempt in range(1, 7):
        proc = _attempt(cmd, attempt, end=time.time())
        codes.append(proc.returncode)
        if proc.returncode != SEGMENT_END:
            break
        assert f"stopped before the time limit at epoch {attempt} of 3; the next attempt resumes" in proc.stderr
        for p in out.glob("*"):  # what Snakemake does to a failed attempt's outputs
            p.unlink()
    assert codes == [SEGMENT_END] * 2 + [0], proc.stderr[-2000:]
    for f in ("final.pt", "epoch_2.pt"):
        assert same_weights(out / f, tmp / "reference" / f), f
    drop = ("seconds", "images_per_s")
    assert log_lines(out / "log.jsonl", drop) == log_lines(tmp / "reference" / "log.jsonl", drop)
    assert not resume.exists() and not resume.with_suffix(".attempt.json").exists()  # cleared when finished


@pytest.mark.slow
def test_a_retry_after_an_error_stops_at_once_with_that_error(setup, tmp_path):
    spec, _, tmp = setup
    missing = tmp_path / "no_teacher.pt"
    cmd = train_command(spec, tmp_path / "out", missing, tmp_path / "state.pt")
    first = _attempt(cmd, 1, None)
    assert first.returncode == 1 and "no_teacher.pt" in first.stderr
    t0 = time.monotonic()
    second = _attempt(cmd, 2, None)
    assert second.returncode == 1
    line = [l for l in second.stderr.splitlines() if "not retried" in l]
    assert len(line) == 1 and "attempt 1 of this job failed" in line[0] and "no_teacher.pt" in line[0], second.stderr
    assert "Traceback" not in second.stderr and time.monotonic() - t0 < 60
    assert os.path.exists(tmp_path / "state.attempt.json")
