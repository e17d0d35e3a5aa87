"""The config schema (workflow/schemas/config.schema.yaml): the one home of every default.

Its own small module so that a job's command-line defaults can come from it without making
distdyn.config (the plan-time checks) part of that job's code fingerprint.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


@lru_cache(maxsize=1)
def _schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def read_schema() -> dict:
    """The parsed schema (a fresh copy: callers may fill it in)."""
    import copy

    return copy.deepcopy(_schema())


def schema_default(key: str):
    """The default of a dotted config key, e.g. schema_default("metrics.bins") or "student.train.threads"."""
    root = node = _schema()
    for part in key.split("."):
        node = node["properties"][part]
        if "$ref" in node:  # a shared definition, e.g. #/definitions/train
            target = root
            for name in node["$ref"].removeprefix("#/").split("/"):
                target = target[name]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}} if "properties" in target else node
    return node["default"]


# Keys of a spec that change how fast a job runs or where it reads its data, not what it computes: no part
# of a run's key, nor of the spec the rules pass as params (a rerun trigger). The workflow's specs hold the
# data's content digest (data.content) instead of its path; the job gets these on its command line. The CPU
# thread count does change the numbers: resume states and store entries record it (numerics).
TUNING = {"train": ("threads",), "data": ("num_workers", "root")}


def key_view(spec: dict) -> dict:
    """`spec` without its TUNING keys."""
    return {k: {kk: vv for kk, vv in v.items() if kk not in TUNING[k]} if k in TUNING and isinstance(v, dict) else v
            for k, v in spec.items()}


def tuned(spec: dict, threads: int | None = None, root: str | None = None, num_workers: int | None = None) -> dict:
    """A job's spec: the one of its params (which lacks the TUNING keys) with the values of its command line,
    else its own, else the schema's defaults. Either section may be absent (a data config alone: {"data": ...})."""
    given = {"train": {"threads": threads}, "data": {"root": root, "num_workers": num_workers}}
    home = {"train": "student.train", "data": "data"}  # where the schema keeps a section's defaults
    out = dict(spec)
    for section, keys in TUNING.items():
        if section in spec:
            out[section] = {**{k: schema_default(f"{home[section]}.{k}") for k in keys}, **spec[section],
                            **{k: v for k, v in given[section].items() if v is not None}}
    return out
