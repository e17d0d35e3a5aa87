import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("8.0")

# Schema first: defaults filled in, types checked, before anything else reads the config.
validate(config, "../schemas/config.schema.yaml")

PKG_DIR = Path(workflow.basedir) / "workflow"
sys.path.insert(0, str(PKG_DIR))

from distdyn.jobenv import export_environment  # noqa: E402
from distdyn.config import (  # noqa: E402
    ConfigError,
    _data_and_models,
    check_config,
    checkpoint_epochs,
    setting_names,
    student_spec,
    teacher_spec,
)

try:
    check_config(config)
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None

export_environment(PKG_DIR)
ENV = "../../envs/distdyn.yaml"

SETTINGS = setting_names(config)
SEEDS = [int(s) for s in config["seeds"]]
_SHAPES = _data_and_models(config)[2]
TEACHER_SPEC = teacher_spec(config)
STUDENT_SPECS = {(s, seed): student_spec(config, s, seed, _SHAPES) for s in SETTINGS for seed in SEEDS}
TEACHER_EPOCHS = [] if config["teacher"]["checkpoint"] else checkpoint_epochs(config["teacher"]["train"])
STUDENT_CKPTS = [f"epoch_{e}" for e in checkpoint_epochs(config["student"]["train"])] + ["final"]
RES = config["resources"]


wildcard_constraints:
    setting="|".join(SETTINGS),
    seed=r"\d+",


def code(*modules):
    """Source files of a stage: editing one re-runs exactly the rules that list it."""
    return [os.path.relpath(PKG_DIR / "distdyn" / f"{m}.py") for m in ("__init__", "config", *modules)]


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def launcher(train_cfg):
    """python -m, or torchrun with one process per GPU for gpus > 1."""
    n = train_cfg["gpus"]
    if n > 1:
        return f"python -m torch.distributed.run --standalone --nproc_per_node={n} -m"
    return "python -m"


def gpus(train_cfg):
    return RES["gpu"] * train_cfg["gpus"]


def run_dir(setting, seed):
    return f"results/students/{setting}/seed_{seed}"


def needs_teacher(setting):
    return next(s for s in config["settings"] if s["name"] == setting)["method"] != "none"


def student_runs():
    return [(s, seed) for s in SETTINGS for seed in SEEDS]


def final_targets():
    tables = ["layers.csv", "spectra.csv", "accuracy.csv", "accuracy_summary.csv", "curves.csv"]
    return (
        [f"results/metrics/{t}" for t in tables]
        + ["results/metrics/cka.csv", "results/metrics/phases.csv", "results/metrics/encoding.csv"]
        + ["results/claims.md"]
        + [f"results/metrics/entropy_{s}_seed_{seed}.csv" for s, seed in student_runs()]
        + [f"results/figures/{f}.png" for f in FIGURES]
        + [f"results/figures/entropy_heatmap_{s}.png" for s in SETTINGS]
        + [f"results/figures/cka_{s}.png" for s in SETTINGS]
    )


def run_tables(name):
    """One per-run metrics table of the teacher and of every student run."""
    return [f"results/metrics/runs/teacher/{name}"] + [
        f"results/metrics/runs/{s}/seed_{seed}/{name}" for s, seed in student_runs()
    ]


def figure(name, category, caption):
    return report(f"results/figures/{name}.png", caption=f"../report/{caption}.rst", category=category)


def claims_options():
    """The claims rule's thresholds from config (claims.*), as CLI flags."""
    c = config["claims"]
    flags = {"--level": c["level"], "--neutral-tolerance": c["neutral_tolerance"],
             "--noise-floor": c["noise_floor"], "--early-fraction": c["early_fraction"]}
    return " ".join(f"{k} {v}" for k, v in flags.items() if v is not None)
