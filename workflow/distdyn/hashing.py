"""The hash of a job's spec, recorded in its checkpoints and resume state.

Its own module, not part of distdyn.config: the training, dump and metric jobs import it, and
a module they import is part of their code fingerprint (distdyn.fingerprint), whereas the
config checks run only where Snakemake plans the jobs.
"""
from __future__ import annotations

import hashlib
import json


def config_hash(obj) -> str:
    """Short stable hash of any JSON-serialisable object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_digest(path) -> str | None:
    """Short hash of a checkpoint's content, for the keys of the runs that read it (a student's teacher);
    None where there is no such file (the reader that loads it names it).

    torch.save writes a zip archive whose folder is named after the file (atomic writers save under a
    temporary name) and which holds a random serialization id, so two saves of the same tensors differ
    in their bytes: the records are hashed by name within the folder, without that id. Any other file
    is hashed as its bytes.
    """
    import os
    import zipfile

    if not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as z:
            records = sorted((info.filename.split("/", 1)[-1], info) for info in z.infolist())
            for name, info in records:
                if name == ".data/serialization_id":
                    continue
                h.update(f"{name}\0{info.file_size}\0".encode())
                with z.open(info) as f:
                    while block := f.read(1 << 20):
                        h.update(block)
    except zipfile.BadZipFile:
        h = hashlib.sha256(b"file\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]
