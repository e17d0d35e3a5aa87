"""The claims rule's command: `python -m distdyn.claims` (its options are in the package docstring's usage)."""
from __future__ import annotations

import argparse
import json
import sys
import zipfile
from dataclasses import fields

import numpy as np

from ..errors import TableError, cli, first_line, read_table, remedy
from ..io import read_spec, write_text
from .beyond import beyond_section
from .render import json_safe, records, render_markdown, settings_preamble
from .settings import Tolerances
from .verdicts import evaluate

# The knobs as options. No defaults here: the rule passes the config's (claims_options in common.smk),
# and one left out takes the config schema's, through Tolerances.
KNOBS = {"--level": float, "--neutral-tolerance": float, "--noise-floor": float, "--entropy-noise-floor": float,
         "--loss-ratio-floor": float, "--early-fraction": float, "--reference": str}


def _read_csv(path):
    return read_table(path) if path else None


def read_correct(path: str) -> dict:
    """{(setting, seed): per-image correctness} from the .npz of distdyn.metrics accuracy --correct."""
    try:
        with np.load(path) as f:
            return {(key.rsplit("/seed_", 1)[0], int(key.rsplit("/seed_", 1)[1])): f[key] for key in f.files}
    except (OSError, ValueError, IndexError, zipfile.BadZipFile) as e:
        raise TableError(path, f"is not the per-image correctness .npz of distdyn.metrics accuracy ({first_line(e)}); "
                               f"{remedy(path)}") from None


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.claims", description=sys.modules[__package__].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", required=True)
    p.add_argument("--accuracy", required=True)
    p.add_argument("--curves", required=True)
    p.add_argument("--cka", help="cka.csv: linear CKA beside the entropy profiles of methods beyond the paper")
    p.add_argument("--settings-json", required=True,
                   help="JSON {name: {method, pairs}} (a string, or a path to a JSON file)")
    p.add_argument("--student-depth", type=int, required=True)
    p.add_argument("--teacher-depth", type=int, required=True)
    p.add_argument("--correct", help="the students' per-image correctness on the validation split (.npz by "
                   "'{setting}/seed_{seed}', distdyn.metrics accuracy --correct): McNemar's test of one-seed pairs")
    p.add_argument("--out", required=True, help="Markdown report")
    p.add_argument("--json", help="also write the records as JSON here")
    p.add_argument("--title", default="Claims of the paper, tested on this run")
    for flag, kind in KNOBS.items():
        p.add_argument(flag, type=kind, help="default: the config schema's claims." + flag[2:].replace("-", "_")
                       if flag != "--reference" else "the logit-KD setting (default: 'logit' or the first logit one)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    settings = read_spec(a.settings_json.strip())
    given = {f.name: getattr(a, f.name) for f in fields(Tolerances) if getattr(a, f.name) is not None}
    layers, accuracy = _read_csv(a.layers), _read_csv(a.accuracy)
    verdicts = evaluate(layers, accuracy, _read_csv(a.curves), settings, a.student_depth, a.teacher_depth,
                        read_correct(a.correct) if a.correct else None, **given)
    claims = records(verdicts)
    preamble = settings_preamble(settings, a.student_depth, a.teacher_depth, Tolerances(**given))
    beyond = beyond_section(layers, accuracy, settings, a.student_depth, a.teacher_depth, Tolerances(**given),
                            _read_csv(a.cka))
    write_text(render_markdown(claims, a.title, preamble) + (f"\n{beyond}" if beyond else ""), a.out)
    if a.json:
        write_text(json.dumps(json_safe(claims), indent=2) + "\n", a.json)
    return 0
