"""Known bad input: one line, `error: <file or config key>: <what is wrong and what to do>`, exit status 1.

Every reader of a config key, data file, checkpoint, activation dump, training log or table raises
a `DistdynError` (or a subclass) that names what it read; every command-line entry point
(`python -m distdyn.X`) is wrapped in `cli`, which prints that line to stderr (the job's log, which
Snakemake shows when the job fails) and returns 1. Any other exception is a bug and keeps its
traceback. The Snakefile prints a config error the same way at plan time (workflow/rules/common.smk).
"""
from __future__ import annotations

import functools
import sys

# What to do about a damaged intermediate file under results/: Snakemake remakes a missing output.
REMAKE = "delete it and run the workflow again to remake it"


class DistdynError(ValueError):
    """A bad input: `where` is the file or config key, `message` what is wrong and what to do."""

    def __init__(self, where, message: str):
        self.where, self.message = str(where), str(message)
        self.init_args = (where, message)  # what __init__ was given: pickling (worker processes) rebuilds from it
        super().__init__(f"{self.where}: {self.message}")

    def __reduce__(self):
        return type(self), tuple(self.init_args)


class CheckpointError(DistdynError):
    """A checkpoint that cannot be loaded or lacks what its reader needs."""


class LogError(DistdynError):
    """A training log (log.jsonl) that cannot be read."""


class TableError(DistdynError):
    """A CSV table that is missing, unreadable, lacks columns, or lacks or has extra rows."""


def error_line(e: BaseException) -> str:
    return f"error: {e}"


def cli(main):
    """Wrap a command-line `main`: a DistdynError becomes its one line on stderr and exit status 1."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except DistdynError as e:
            print(error_line(e), file=sys.stderr, flush=True)
            return 1

    return wrapped


def first_line(e: BaseException, limit: int = 160) -> str:
    """`Type: first sentence of the message`, for a foreign exception quoted inside a DistdynError."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > limit:
        cut = text.find(". ", 40)
        text = text[:cut + 1] if 0 < cut < limit else text[:limit] + " ..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def remedy(path) -> str:
    """What to do about a damaged file: one under results/ is remade, one of your own is replaced."""
    from pathlib import Path

    return REMAKE if "results" in Path(path).parts else "replace it with a complete copy"


def yaml_problem(path) -> str | None:
    """Why a YAML config file cannot be read, with its line and column, or None (Snakemake's own
    message for a YAML syntax error names neither the file nor the line)."""
    from pathlib import Path

    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        if Path(path).name == "config.yaml":
            return ("does not exist: without --configfile the workflow reads config.yaml in the working "
                    "directory; give --configfile FILE (e.g. a preset) or create config.yaml")
        return "does not exist"
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        start = e.context_mark
        context = f" {e.context}" if e.context else ""
        if e.context and start is not None and mark is not None and start.line != mark.line:
            context += f" that starts at line {start.line + 1}, column {start.column + 1}"
        return f"{where}YAML syntax error: {e.problem}{context} (indent with spaces, not tabs; quote odd strings)"
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        return f"not a readable YAML file ({first_line(e)})"
    if data is not None and not isinstance(data, dict):
        return f"holds a {type(data).__name__}, not a mapping of config keys"
    return None


# ---------------------------------------------------------------- tables


def read_table(path, columns=()):
    """A CSV table as a DataFrame; missing, empty, unparseable or lacking `columns`: TableError naming it."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise TableError(path, "does not exist") from None
    except pd.errors.EmptyDataError:
        raise TableError(path, f"is empty; {remedy(path)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise TableError(path, f"is not a readable CSV table ({first_line(e)}); {remedy(path)}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TableError(path, f"lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)} "
                               f"(has {', '.join(map(str, df.columns)) or 'none'}); {remedy(path)}")
    return df


def check_complete(df, path, expected: list[dict]) -> None:
    """The rows of `df` are exactly what `expected` lists, else TableError naming `path`.

    Each entry is {"keys": [[column, [values, ...]], ...], "per_group": n}: every combination of the
    key values occurs exactly n times (n rows per group, e.g. the frequencies of one layer's spectrum).
    Rows whose first key's value is in no entry are refused (another run's rows).
    """
    import itertools

    entries = [(dict(e["keys"]), int(e.get("per_group", 1))) for e in expected]
    first = expected[0]["keys"][0][0]
    columns = list(dict.fromkeys(c for keys, _ in entries for c in keys))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TableError(path, f"lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)}; {remedy(path)}")
    as_text = df[columns].astype(str)
    known = {str(v) for keys, _ in entries for v in keys[first]}
    foreign = sorted(set(as_text[first]) - known)
    if foreign:
        raise TableError(path, f"has rows of {first} {', '.join(foreign[:3])}{' ...' * (len(foreign) > 3)}, "
                               f"which this run does not make (another run's table?); {remedy(path)}")
    for keys, per_group in entries:
        names = list(keys)
        rows = as_text[as_text[first].isin([str(v) for v in keys[first]])]
        counts = rows.groupby(names).size().to_dict()
        combos = list(itertools.product(*([str(v) for v in keys[k]] for k in names)))
        for combo in combos:
            got = counts.get(combo if len(names) > 1 else combo[0], 0)
            if got != per_group:
                where = ", ".join(f"{k} {v}" for k, v in zip(names, combo))
                if got > per_group:
                    raise TableError(path, f"{where} has {got} rows, expected {per_group} (duplicated rows?); "
                                           f"{remedy(path)}")
                what = "missing" if got == 0 else f"{got} rows, expected {per_group}"
                raise TableError(path, f"incomplete ({len(df)} rows): {where} is {what} "
                                       f"(truncated or damaged?); {remedy(path)}")
        extra = len(rows) - per_group * len(combos)
        if extra:
            raise TableError(path, f"has {extra} rows beyond the expected ones (duplicated rows?); {remedy(path)}")
