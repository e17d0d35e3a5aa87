"""The claims as data, from claims.yaml: each claim's statement (paper.md section 1), the paper's own
numbers for it (section 4) and its test (`Test`: what it compares, between which settings, in which
direction, which floor decides one seed, and the paper's effect)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

FINGERPRINT_FILES = ("claims.yaml",)  # the data this module loads: part of the claims rule's code fingerprint
DIRECTIONS = {"below": -1, "above": +1, "within": None}  # setting minus `against`: < 0, > 0, within tolerance


@dataclass(frozen=True)
class Part:
    """One quantity compared (evidence.QUANTITIES) and the direction the claim states."""

    quantity: str
    direction: str  # below, above or within
    paper_effect: dict[str, float] = field(default_factory=dict)  # method -> the paper's difference

    @property
    def sign(self) -> int | None:
        return DIRECTIONS[self.direction]


@dataclass(frozen=True)
class Test:
    """A claim's test as data (claims.yaml's `test`, whose header comment documents the fields)."""

    kind: str = "compare"
    select: str = ""
    methods: tuple[str, ...] = ()
    against: str = "reference"
    parts: tuple[Part, ...] = ()
    floor: str | None = None
    floor_rule: str = "halfwidth"
    context: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _test(cid: str, d: dict) -> Test:
    parts = tuple(Part(**p) for p in d.get("parts", ()))
    bad = [p.direction for p in parts if p.direction not in DIRECTIONS]
    if bad:
        raise ValueError(f"claims.yaml {cid}: direction {bad[0]!r} is none of {list(DIRECTIONS)}")
    return Test(**{**d, "parts": parts, "methods": tuple(d.get("methods", ())),
                   "context": tuple(d.get("context", ())), "notes": tuple(d.get("notes", ()))})


def _load() -> tuple[dict[str, str], dict[str, str], dict[str, Test]]:
    with open(Path(__file__).with_name(FINGERPRINT_FILES[0])) as f:
        data = yaml.safe_load(f)
    return ({c: d["claim"] for c, d in data.items()}, {c: d["paper"] for c, d in data.items()},
            {c: _test(c, d["test"]) for c, d in data.items()})


CLAIMS, PAPER, TESTS = _load()  # claim id -> text, the paper's numbers, its test; in the file's order
