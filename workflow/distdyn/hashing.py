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
