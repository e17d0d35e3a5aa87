"""Files: atomic writes (a killed job leaves no half-written output), JSON specs given inline or as a
file, and chunked reads."""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh temporary name beside `path` to write to; renamed to `path` when the block ends, removed
    if it raises. The name is unique per writer (no mkstemp: its 0600 mode would reach the output)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_lines(lines: list[str], path: str | os.PathLike) -> None:
    write_text("".join(s + "\n" for s in lines), path)


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_npz(arrays: dict, path: str | os.PathLike) -> None:
    """numpy arrays by name, compressed (np.savez_compressed into a file object: it would add .npz to a name)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def read_spec(text: str):
    """A JSON object or list given inline, or the path of a JSON file."""
    text = text.strip()
    if text.startswith(("{", "[")):
        return json.loads(text)
    with open(text) as f:
        return json.load(f)


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive slices of range(n), `size` long but the last."""
    for start in range(0, n, size):
        yield start, min(start + size, n)
