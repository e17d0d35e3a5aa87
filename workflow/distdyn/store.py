"""Finished student runs, kept under the hash of their spec and training code (no torch in here).

A `distill_group` job trains the students of one seed that need the teacher together, one teacher
forward per batch for all of them (`distdyn.train --group`), and publishes each finished student
here, outside every rule's outputs:

    {store}/{setting}_seed_{seed}/{key}/   the run's files (log.jsonl, epoch_E.pt, final.pt),
                                           train.log (its own log lines) and entry.json
    key = job_key(spec, code): the student's spec and the fingerprint of the training code

Each student's own job (`distill_student`, outputs at the usual paths) then runs

    python -m distdyn.store restore ENTRY --out DIR -- TRAINING COMMAND ...

which hard-links the entry's files into DIR and prints the student's log lines (no training, and no
torch import, so it takes a fraction of a second), or, when there is no entry, replaces itself with
the training command: the student trains alone, as without sharing. A student whose training failed
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

from .hashing import config_hash
from .jobenv import stamp

ENTRY = "entry.json"
LOG = "train.log"
PARTIAL = ".partial"
NOT_STORED, FAILED = 1, 3  # exit statuses of `restore` without a training command


def job_key(spec: dict, code: str | None) -> str:
    """The hash a finished run is stored under: everything its job's params hold (spec and code fingerprint)."""
    return config_hash({"spec": spec, "code": code})


def entry_dir(root: str | os.PathLike, spec: dict, code: str | None) -> Path:
    return Path(root) / f"{spec['name']}_seed_{spec['seed']}" / job_key(spec, code)


def staging_dir(entry: Path) -> Path:
    """Where a group job writes a student's files while it trains (renamed to the entry when done)."""
    return entry.with_name(entry.name + PARTIAL)


def read(entry: str | os.PathLike) -> dict | None:
    """The entry's record if it is complete (its files all there), else None."""
    entry = Path(entry)
    try:
        info = json.loads((entry / ENTRY).read_text())
    except (OSError, ValueError):
        return None
    if info.get("status") == "done" and not all((entry / f).is_file() for f in info.get("files", [])):
        return None
    return info


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.restore")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


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
    """A group job's finished student: `files` (written into `staging`) become the entry."""
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
        _link_or_copy(out / name, tmp / name)
    publish(tmp, entry, files, [f"{stamp()} adopted the finished run in {out} (same spec and training code)"], meta)


def restore(entry: str | os.PathLike, out: str | os.PathLike) -> int:
    """The entry's files into `out`: 0 when restored, NOT_STORED without an entry, FAILED for a failed run."""
    entry, out = Path(entry), Path(out)
    info = read(entry)
    if info is None:
        return NOT_STORED
    if info["status"] == "failed":
        print(f"{stamp()} error: {info['error']} (in {info.get('job') or 'a group job'}); the entry "
              f"{entry} is dropped, so the next run trains this student again", file=sys.stderr, flush=True)
        shutil.rmtree(entry, ignore_errors=True)
        return FAILED
    for name in info["files"]:
        _link_or_copy(entry / name, out / name)
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
                       usage="python -m distdyn.store restore ENTRY --out DIR [-- COMMAND ...]")
    r.add_argument("entry", help="the student's entry folder (entry_dir)")
    r.add_argument("--out", required=True, help="the student's output folder")
    args = p.parse_args(argv)
    status = restore(args.entry, args.out)
    if status == NOT_STORED and command:
        print(f"{stamp()} nothing stored for this student ({args.entry}): training it here", file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        os.execvp(command[0], command)
    return status


if __name__ == "__main__":
    sys.exit(main())
