"""What the store's copies and the teacher's content key cost at the paper preset's sizes (issue 20).

    python benchmarks/store_copies.py [--dir DIR] [--runs 7] [--checkpoints 11] [--repeats 3]

Outputs and the store never share a file (distdyn.store.copy_file: a reflink where the filesystem has
them, else a copy), where they were hard links before. At the paper preset's sizes a student run is
eleven DeiT-Tiny checkpoints (epoch_E.pt every 30 epochs and final.pt, about 22 MB each) and a seed
has seven students. This times, on the filesystem of DIR (default: a temporary folder in the working
directory, i.e. beside results/):

  restore   hard-linking a seed's 77 checkpoints into outputs (before) against copy_file (now), and the
            disk that the copies take (the filesystem's free space before and after);
  keep      Resume.keep's copy of one epoch checkpoint beside the resume state (was a hard link);
  digest    distdyn.hashing.checkpoint_digest of a CaiT-S24 checkpoint (the teacher, about 180 MB),
            once per student job, against torch.load of the same file and a sha256 of its bytes.

The files are fresh, so the page cache holds them (a teacher just trained or restored is read from
memory too); on a cold cache add the disk's read time of the file.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def timed(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def checkpoint(model_name: str, path: Path) -> int:
    """A distdyn-style checkpoint of a randomly initialised timm model at `path`; its size in bytes."""
    import timm
    import torch

    from distdyn.models import atomic_save

    torch.manual_seed(0)
    model = timm.create_model(model_name)
    atomic_save({"model": model.state_dict(), "arch": model_name, "overrides": {}, "epoch": 300}, path)
    return path.stat().st_size


def reflinks(folder: Path) -> bool:
    """Whether the filesystem of `folder` makes reflinks (FICLONE)."""
    import fcntl

    from distdyn.store import FICLONE

    src, dst = folder / "reflink_probe.src", folder / "reflink_probe.dst"
    src.write_bytes(b"x" * 4096)
    try:
        with open(src, "rb") as fs, open(dst, "wb") as fd:
            fcntl.ioctl(fd.fileno(), FICLONE, fs.fileno())
        return True
    except OSError:
        return False
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", help="where to write (default: a temporary folder in the working directory)")
    p.add_argument("--runs", type=int, default=7, help="student runs per seed (the paper preset's 7)")
    p.add_argument("--checkpoints", type=int, default=11, help="checkpoints per run (10 epoch_E.pt and final.pt)")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)

    from distdyn.hashing import checkpoint_digest
    from distdyn.store import copy_file

    base = Path(a.dir) if a.dir else Path.cwd()
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="store_bench_", dir=base))
    try:
        student = work / "deit_tiny.pt"
        size = checkpoint("deit_tiny_patch16_224", student)
        n = a.runs * a.checkpoints
        store = work / "store"
        store.mkdir()
        for i in range(n):
            shutil.copyfile(student, store / f"{i}.pt")
        print(f"filesystem of {work}: reflinks {'yes' if reflinks(work) else 'no (plain copies)'}")
        print(f"student checkpoint (deit_tiny_patch16_224): {size / 1e6:.1f} MB; a seed: {a.runs} runs x "
              f"{a.checkpoints} checkpoints = {n} files, {n * size / 1e9:.2f} GB")

        def restore(how):
            def go():
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                for i in range(n):
                    how(store / f"{i}.pt", out / f"{i}.pt")
            return go

        linked = timed(restore(os.link), a.repeats)
        shutil.rmtree(work / "out")
        before = free_bytes(work)
        copied = timed(restore(copy_file), a.repeats)
        disk = before - free_bytes(work)
        print(f"restore a seed's checkpoints: hard links {linked:.3f} s, copy_file {copied:.2f} s "
              f"({n * size / copied / 1e9:.2f} GB/s), extra disk {disk / 1e9:.2f} GB "
              f"({disk / max(n * size, 1):.0%} of the checkpoints' size)")
        keep = timed(lambda: copy_file(student, work / "kept.pt"), a.repeats)
        print(f"Resume.keep of one epoch checkpoint: copy_file {keep * 1e3:.0f} ms (was a hard link); "
              f"a run keeps at most {a.checkpoints - 1} until it finishes ({(a.checkpoints - 1) * size / 1e6:.0f} MB)")

        teacher = work / "cait_s24_224.pt"
        tsize = checkpoint("cait_s24_224", teacher)
        digest = timed(lambda: checkpoint_digest(teacher), a.repeats)

        def raw_sha256():
            h = hashlib.sha256()
            with open(teacher, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)

        raw = timed(raw_sha256, a.repeats)
        import torch

        load = timed(lambda: torch.load(teacher, map_location="cpu", weights_only=True), a.repeats)
        print(f"teacher checkpoint (cait_s24_224): {tsize / 1e6:.0f} MB; checkpoint_digest {digest:.2f} s "
              f"({tsize / digest / 1e9:.2f} GB/s), sha256 of its bytes {raw:.2f} s, torch.load {load:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
