"""The paper's side of each claim, from claims.yaml: its statement (paper.md section 1) and the
paper's own numbers for it (section 4)."""
from __future__ import annotations

from pathlib import Path

import yaml

FINGERPRINT_FILES = ("claims.yaml",)  # the data this module loads: part of the claims rule's code fingerprint


def _load() -> tuple[dict[str, str], dict[str, str]]:
    with open(Path(__file__).with_name(FINGERPRINT_FILES[0])) as f:
        data = yaml.safe_load(f)
    return {c: d["claim"] for c, d in data.items()}, {c: d["paper"] for c, d in data.items()}


CLAIMS, PAPER = _load()  # claim id -> text, in the file's order
