"""Finished student runs, kept under the hash of their spec, training code and teacher (no torch in here).

A `distill_group` job trains the students of one seed that need the teacher together, one teacher
forward per batch for all of them (`distdyn.train --group`), and publishes each finished student
here, outside every rule's outputs:

    {store}/{setting}_seed_{seed}/{key}/   the run's files (log.jsonl, epoch_E.pt, final.pt), read-only,
                                           train.log (its own log lines) and entry.json
    key = job_key(spec, code): the student's spec (without the TUNING keys: threads, loader workers, data
          path) and the fingerprint of the training code (known when Snakemake plans the jobs);
          entry.json adds the teacher's checkpoint_digest (known once the teacher is trained), and the
          entry counts only for that teacher, and the numerics it was computed with (device, CPU threads)

Each student's own job (`distill_student`, outputs at the usual paths) then runs

    python -m distdyn.store restore ENTRY --out DIR [--teacher CKPT] [--threads N --gpu G] -- TRAINING COMMAND ...

which copies the entry's files into DIR (copy_file: a reflink where the filesystem has them) and
prints the student's log lines (no training, and no torch import, so it takes a fraction of a
second), or, when there is no entry for this teacher (or the entry was computed on the CPU with another
thread count and this job trains on the CPU), replaces itself with the training command: the
student trains alone, as without sharing. Outputs and the store never share a file, so an output
edited in place (a log opened for append, a checkpoint saved over) leaves the stored run intact, and
deleting the output restores the good file. A student whose training failed
in the group job (a non-finite loss) has an entry that says so: its job prints the error and fails,
and drops the entry, so the next run trains it again.

Entries stay after a restore: the group job of a later run skips every student whose entry (or
whose finished output with the same key) exists and trains only the changed and new ones. A forced
re-run therefore restores a stored student instead of retraining it; delete its folder here (or the
whole store) to retrain it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from .hashing import checkpoint_digest, config_hash
from .schema import key_view
from .jobenv import stamp

ENTRY = "entry.json"
LOG = "train.log"
PARTIAL = ".partial"
NOT_STORED, FAILED = 1, 3  # exit statuses of `restore` without a training command


# linux/fs.h FICLONE: the destination shares the source's blocks until either is written (copy-on-write)
FICLONE = 0x40049409


def job_key(spec: dict, code: str | None, weights: str | None = None) -> str:
    """The hash of everything a training run reads: its job's params (spec without its TUNING keys, code
    fingerprint) and the checkpoint_digest of the weights it reads, a student's teacher or a teacher's
    starting checkpoint (None for a run that reads none, e.g. the no-KD baseline, whose key is then the
    spec's and code's alone)."""
    return config_hash({"spec": key_view(spec), "code": code, **({"weights": weights} if weights is not None else {})})


def numerics(device: str, threads: int) -> dict:
    """What, beside its key, decides a run's numbers on this machine: the device type, and on the CPU the
    thread count (1 and 2 threads differ by ~4e-3 in the weights after 3 epochs); recorded in resume
    states and store entries."""
    return {"device": device, **({"threads": int(threads)} if device == "cpu" else {})}


def other_numerics(recorded: dict | None, device, threads: int) -> str | None:
    """Why a run recorded with `recorded` numerics cannot continue in (or be restored into) a job on `device`
    (a type, or a callable giving it: asked only when it matters) with `threads`: None when it can. Only a
    CPU run's thread count counts: on CUDA any thread count is accepted, and a run without a record (or
    saved on another device type, which the RNG state allows) is accepted as it was before the record."""
    if not recorded or recorded.get("device") != "cpu" or recorded.get("threads") in (None, threads):
        return None
    if (device() if callable(device) else device) != "cpu":
        return None
    return f"it was computed with {recorded['threads']} CPU threads, this job has {threads} (the CPU's results " \
           f"depend on the thread count)"


def entry_dir(root: str | os.PathLike, spec: dict, code: str | None) -> Path:
    return Path(root) / f"{spec['name']}_seed_{spec['seed']}" / job_key(spec, code)


def staging_dir(entry: Path) -> Path:
    """Where a group job writes a student's files while it trains (renamed to the entry when done)."""
    return entry.with_name(entry.name + PARTIAL)


def record(entry: str | os.PathLike) -> dict | None:
    """The entry's record if it is complete (its files all there), whichever teacher it was distilled from."""
    entry = Path(entry)
    try:
        info = json.loads((entry / ENTRY).read_text())
    except (OSError, ValueError):
        return None
    if info.get("status") == "done" and not all((entry / f).is_file() for f in info.get("files", [])):
        return None
    return info


def read(entry: str | os.PathLike, teacher: str | None = None, device: str | None = None,
         threads: int | None = None) -> dict | None:
    """The entry's record if it is complete and was distilled from `teacher` (a checkpoint_digest; None for
    a run without one), and (with `device`) its numerics fit that device and `threads`; else None."""
    info = record(entry)
    if info is None or info.get("teacher") != teacher:
        return None
    return info if device is None or other_numerics(info.get("numerics"), device, threads) is None else None


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """`src` copied to `dst` through a temporary name: a reflink where the filesystem has them (XFS, btrfs:
    no data copied until one of the two is written), else a plain copy. Never a hard link, so writing
    into one of the two in place leaves the other as it was."""
    import fcntl

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.copy")
    tmp.unlink(missing_ok=True)
    try:
        try:
            with open(src, "rb") as fsrc, open(tmp, "wb") as fdst:
                fcntl.ioctl(fdst.fileno(), FICLONE, fsrc.fileno())
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _seal(entry: Path, files: list[str]) -> None:
    """Make an entry's run files read-only: an in-place write into the store fails loudly (but as root)."""
    for name in files:
        (entry / name).chmod(0o444)


def _write(entry_tmp: Path, info: dict, log_lines: list[str]) -> None:
    (entry_tmp / LOG).write_text("".join(line + "\n" for line in log_lines))
    (entry_tmp / ENTRY).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


def _install(tmp: Path, entry: Path) -> None:
    """Move a finished staging folder into place and drop the student's entries under other keys."""
    if entry.exists():
        shutil.rmtree(entry)
    os.replace(tmp, entry)
    for sibling in entry.parent.iterdir():
        if sibling.name not in (entry.name, entry.name + PARTIAL):
            shutil.rmtree(sibling, ignore_errors=True)


def publish(staging: Path, entry: Path, files: list[str], log_lines: list[str], meta: dict) -> None:
    """A group job's finished student: `files` (written into `staging`) become the entry. `meta` holds the
    name, seed, key and teacher (its checkpoint_digest) of the run."""
    _seal(staging, files)
    _write(staging, {**meta, "status": "done", "files": list(files)}, log_lines)
    _install(staging, entry)


def publish_failure(entry: Path, error: str, log_lines: list[str], meta: dict) -> None:
    tmp = staging_dir(entry)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write(tmp, {**meta, "status": "failed", "error": error, "files": []}, log_lines)
    _install(tmp, entry)


def adopt(out: Path, entry: Path, files: list[str], meta: dict) -> None:
    """A finished run already in its output folder (same key) becomes the entry, without training."""
    tmp = staging_dir(entry)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in files:
        copy_file(out / name, tmp / name)
    publish(tmp, entry, files, [f"{stamp()} adopted the finished run in {out} (same spec, training code and teacher)"],
            meta)


def restore(entry: str | os.PathLike, out: str | os.PathLike, teacher: str | None = None, device=None,
            threads: int | None = None) -> int:
    """The entry's files into `out` (copies): 0 when restored, NOT_STORED without an entry for `teacher`
    (the checkpoint_digest of the student's teacher, None without one) or, with `device` (see other_numerics),
    for an entry computed with other numerics; FAILED for a failed run."""
    entry, out = Path(entry), Path(out)
    info = record(entry)
    if info is None:
        return NOT_STORED
    if info.get("teacher") != teacher:
        print(f"{stamp()} the run stored in {entry} was distilled from another teacher (checkpoint digest "
              f"{info.get('teacher')}; this job's teacher has {teacher}): not restored", file=sys.stderr, flush=True)
        return NOT_STORED
    if device is not None and (why := other_numerics(info.get("numerics"), device, threads)):
        print(f"{stamp()} the run stored in {entry} is not restored: {why}", file=sys.stderr, flush=True)
        return NOT_STORED
    if info["status"] == "failed":
        print(f"{stamp()} error: {info['error']} (in {info.get('job') or 'a group job'}); the entry "
              f"{entry} is dropped, so the next run trains this student again", file=sys.stderr, flush=True)
        shutil.rmtree(entry, ignore_errors=True)
        return FAILED
    for name in info["files"]:
        copy_file(entry / name, out / name)
    print(f"{stamp()} restored {info.get('name')} seed {info.get('seed')} from {entry} "
          f"({', '.join(info['files'])}); its log lines from {info.get('job') or 'training'}:", file=sys.stderr)
    log = entry / LOG
    if log.is_file():
        sys.stderr.write(log.read_text())
    sys.stderr.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    import argparse

    p = argparse.ArgumentParser(prog="python -m distdyn.store", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("restore", help="restore a stored student into its output folder, else run COMMAND",
                       usage="python -m distdyn.store restore ENTRY --out DIR [--teacher CKPT] [--threads N --gpu G] "
                             "[-- COMMAND ...]")
    r.add_argument("entry", help="the student's entry folder (entry_dir)")
    r.add_argument("--out", required=True, help="the student's output folder")
    r.add_argument("--teacher", help="the student's teacher checkpoint: restored only if the entry was distilled "
                                     "from a checkpoint with the same content")
    r.add_argument("--ready", help="without COMMAND: the group job's status file of this student, removed when "
                                   "nothing is stored, so that the next run trains the student in its group job")
    r.add_argument("--threads", type=int, help="the training command's CPU threads: an entry computed on the CPU "
                                               "with another count is not restored when this job trains on the CPU")
    r.add_argument("--gpu", type=int, default=0, help="GPUs granted to the training command (0: CPU)")
    args = p.parse_args(argv)
    teacher = checkpoint_digest(args.teacher) if args.teacher and record(args.entry) else None  # only if needed
    device = None
    if args.threads is not None:  # the training command's device, known only by importing torch: asked if needed
        from .jobenv import granted_device

        device = (lambda: granted_device(args.gpu)) if args.gpu else "cpu"
    status = restore(args.entry, args.out, teacher, device, args.threads)
    if status == NOT_STORED and command:
        print(f"{stamp()} nothing stored for this student ({args.entry}): training it here", file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        os.execvp(command[0], command)
    if status == NOT_STORED and args.ready:
        Path(args.ready).unlink(missing_ok=True)
        print(f"{stamp()} error: nothing stored for this student in {args.entry} (its group job's entry was removed "
              f"or made from another teacher); removed {args.ready}, so the next run trains it again in its group "
              f"job", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
