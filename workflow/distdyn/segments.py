"""Training longer than a job may run: a job stops cleanly before its time limit and the next attempt resumes.

A training job learns when it must end: the end time of its SLURM allocation (slurmctld's, `squeue -h -j
$SLURM_JOB_ID -o %e`; the executor's job step strips the other SLURM variables), or DISTDYN_END_TIME (seconds
since the epoch, or an ISO time) where something else sets the limit, and tests. Before each epoch it asks
`Deadline.allows`: when the epoch would not end (its duration estimated by the longest epoch of this attempt)
before the end time less a margin, the job stops with SEGMENT_END (its resume state is saved after every
epoch), and Snakemake's next attempt (`retries`) resumes there. So a segment loses no computed work: only
the unused rest of its allocation, less than one epoch.

Each attempt leaves a record beside the run's resume state (`Attempts`): a retried job goes on only after a
segment's end or a termination by signal (SLURM's time limit, preemption, requeue: SIGTERM); after an error
(a bad input, a non-finite loss, an out-of-memory kill) the next attempt stops at once with the first
attempt's error instead of repeating it once per retry.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

from .io import write_text

SEGMENT_END = 75  # EX_TEMPFAIL: the job stopped before its time limit; its next attempt resumes
TERMINATED = 128 + signal.SIGTERM
MARGIN_S = 10.0  # room after the last epoch for the process to exit (the epoch's time includes its saves)
SLACK = 1.25  # an epoch may take this much longer than the longest one seen


class SegmentEnd(Exception):
    """The job stops here, before its time limit; the resume state holds every finished epoch."""

    def __init__(self, epoch: int, epochs: int):
        super().__init__(f"stopped before the time limit at epoch {epoch} of {epochs}; the next attempt resumes")
        self.epoch, self.epochs = epoch, epochs


def parse_time(text: str) -> float | None:
    """Seconds since the epoch from a number or an ISO time (SLURM's `%e`: local time, no zone); None for
    'N/A', 'Unknown', 'NONE' or an empty string (no limit)."""
    text = text.strip()
    if not text or text.upper() in ("N/A", "UNKNOWN", "NONE"):
        return None
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def job_end_time() -> float | None:
    """When this job's allocation ends: DISTDYN_END_TIME, else slurmctld's end time of SLURM_JOB_ID, else None."""
    if os.environ.get("DISTDYN_END_TIME"):
        return parse_time(os.environ["DISTDYN_END_TIME"])
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    return parse_time(lines[0]) if out.returncode == 0 and lines else None


class Deadline:
    """Whether one more epoch fits before `end` (seconds since the epoch; None: no limit)."""

    def __init__(self, end: float | None, clock=time.time):
        self.end, self.clock = end, clock
        self.longest = 0.0  # the longest epoch of this attempt, seconds

    def record(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)

    def allows(self) -> bool:
        """True without a limit, and for an attempt's first epoch (its duration is unknown; a job always
        makes progress); else whether the next epoch ends before the end time less MARGIN_S."""
        if self.end is None or self.longest == 0.0:
            return True
        return self.clock() + SLACK * self.longest + MARGIN_S <= self.end


class Attempts:
    """Each attempt's record of one training job, `<resume>.attempt.json`: attempt number, status (running,
    segment, terminated, failed) and the epochs it started and ended at."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None

    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text()) if self.path else None
        except (OSError, ValueError):
            return None

    def write(self, record: dict) -> None:
        if self.path is not None:
            write_text(json.dumps(record), self.path)

    def begin(self, attempt: int) -> str | None:
        """Record this attempt's start; the reason not to go on, if the previous attempt of this job (one with a
        lower number: a requeued attempt keeps its number) ended other than at a segment's end or by a signal,
        or if it and the one before it both ended without finishing an epoch."""
        prev = self.read()
        if attempt > 1 and prev and prev.get("attempt", 0) < attempt:
            status = prev.get("status")
            if status == "failed":
                return f"attempt {prev['attempt']} of this job failed: {prev.get('error')}; not retried"
            if status == "running":
                return (f"attempt {prev['attempt']} of this job ended without a word (killed: out of memory, or "
                        f"SIGKILL; its SLURM log says which); not retried")
            if _no_progress(prev) and prev.get("after_no_progress"):
                return ("two attempts in a row ended before finishing an epoch: one epoch takes longer than the job's "
                        "time limit (resources.max_runtime); raise it, or make an epoch shorter (more GPUs)")
        self.write({"attempt": attempt, "status": "running", "after_no_progress": bool(prev and _no_progress(prev))})
        return None

    def started(self, epoch: int) -> None:
        """The epoch this attempt resumes from."""
        self._update(start_epoch=epoch, end_epoch=epoch)

    def progress(self, epoch: int) -> None:
        """The epoch this attempt has finished (every member's state is saved up to it)."""
        self._update(end_epoch=epoch)

    def end(self, status: str, error: str | None = None) -> None:
        self._update(status=status, **({"error": error} if error else {}))

    def _update(self, **fields) -> None:
        record = self.read()
        if record is not None:
            self.write({**record, **fields})


def _no_progress(record: dict) -> bool:
    return record.get("status") == "terminated" and record.get("end_epoch", 0) == record.get("start_epoch", 0)
