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
