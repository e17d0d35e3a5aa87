"""Configuration: schema validation with defaults, cross-field checks, and per-job specs.

The Snakefile validates with Snakemake's own `validate` and then calls
`check_config`; `load_config` does both for Python users and tests.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
FIRST_LAST = {"first": ("first",), "last": ("last",), "first_last": ("first", "last")}


class ConfigError(ValueError):
    """A configuration problem; the message starts with the offending key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config key '{key}': {message}")
        self.key = key


def read_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def validate_schema(cfg: dict) -> dict:
    """Validate against the JSON Schema and fill in every default, in place."""
    import jsonschema

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    validator_cls = jsonschema.validators.extend(base, {"properties": set_defaults})
    errors = sorted(validator_cls(read_schema()).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        key = ".".join(str(p) for p in e.absolute_path) or "<root>"
        raise ConfigError(key, e.message)
    return cfg


def load_config(source: str | Path | dict) -> dict:
    """Read (if a path), validate, fill defaults and run the cross-field checks."""
    if isinstance(source, dict):
        cfg = copy.deepcopy(source)
    else:
        with open(source) as f:
            cfg = yaml.safe_load(f) or {}
    validate_schema(cfg)
    check_config(cfg)
    return cfg


# ---------------------------------------------------------------- derived values


def checkpoint_epochs(train_cfg: dict) -> list[int]:
    """Epochs with an epoch_{E}.pt file; the last epoch is final.pt, so it is not listed."""
    every, epochs = train_cfg["checkpoint_every"], train_cfg["epochs"]
    listed = range(every, epochs, every) if isinstance(every, int) and every > 0 else (every or [])
    return sorted({e for e in listed if 0 < e < epochs})


def resolve_pairs(layers, student_depth: int, teacher_depth: int) -> list[list[int]]:
    """Explicit [[student_block, teacher_block], ...] (0-based, ascending) for a `layers` value."""
    if isinstance(layers, str):
        ends = {"first": [0, 0], "last": [student_depth - 1, teacher_depth - 1]}
        return [ends[e] for e in FIRST_LAST[layers]]
    return sorted([int(s), int(t)] for s, t in layers)


def resolved_setting(cfg: dict, setting: dict, depths: tuple[int, int]) -> dict:
    """A setting with every weight filled in from `distill` and its layer pairs made explicit."""
    out = {k: setting.get(k, cfg["distill"][k]) for k in cfg["distill"]}
    out.update(name=setting["name"], method=setting["method"])
    out["pairs"] = resolve_pairs(setting["layers"], *depths) if setting["method"] in ("spectral", "projector", "mse") else []
    return out


def config_hash(obj) -> str:
    """Short stable hash of any JSON-serialisable object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def setting_names(cfg: dict) -> list[str]:
    return [s["name"] for s in cfg["settings"]]


def get_setting(cfg: dict, name: str) -> dict:
    for s in cfg["settings"]:
        if s["name"] == name:
            return s
    raise ConfigError("settings", f"no setting named {name!r}")


# ---------------------------------------------------------------- cross-field checks


def _model_shapes(cfg: dict, info) -> dict[str, tuple[int, int]]:
    from .models import describe_model

    shapes = {}
    for role in ("teacher", "student"):
        try:
            shapes[role] = describe_model(cfg[role], info.num_classes, info.in_chans)
        except Exception as e:  # noqa: BLE001 - timm raises many types for bad kwargs
            raise ConfigError(f"{role}.model", f"cannot build {cfg[role]['model']!r} with overrides "
                                               f"{cfg[role]['overrides']}: {e}") from e
    return shapes


def check_config(cfg: dict) -> dict:
    """Checks the schema cannot express; each raises one ConfigError naming the key."""
    from .data import DataError, describe

    names = setting_names(cfg)
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"settings[{i}].name", f"two settings are named {name!r}")
    if cfg["teacher"]["checkpoint"] and not Path(cfg["teacher"]["checkpoint"]).is_file():
        raise ConfigError("teacher.checkpoint", f"file {cfg['teacher']['checkpoint']} does not exist")
    if not cfg["teacher"]["checkpoint"] and cfg["teacher"]["train"]["epochs"] < 1:
        raise ConfigError("teacher.train.epochs", "must be at least 1 when no teacher.checkpoint is given")
    if cfg["student"]["train"]["epochs"] < 1:
        raise ConfigError("student.train.epochs", "must be at least 1")
    try:
        info = describe(cfg["data"])
    except DataError as e:
        raise ConfigError("data.root", str(e).removeprefix("data.root: ")) from e
    if cfg["probe"]["size"] > info.val_size:
        raise ConfigError("probe.size", f"{cfg['probe']['size']} probe images requested, "
                                        f"the validation split has {info.val_size}")
    shapes = _model_shapes(cfg, info)
    (t_depth, t_width), (s_depth, s_width) = shapes["teacher"], shapes["student"]
    for i, s in enumerate(cfg["settings"]):
        key = f"settings[{i}]"
        feature = s["method"] in ("spectral", "projector", "mse")
        if feature and "layers" not in s:
            raise ConfigError(f"{key}.layers", f"method {s['method']} needs layers (first, last, first_last or pairs)")
        if not feature and "layers" in s:
            raise ConfigError(f"{key}.layers", f"method {s['method']} uses no feature loss; remove layers")
        if not feature:
            continue
        for s_idx, t_idx in resolve_pairs(s["layers"], s_depth, t_depth):
            if not 0 <= s_idx < s_depth:
                raise ConfigError(f"{key}.layers", f"student block {s_idx} is out of range: the student has {s_depth} blocks (0..{s_depth - 1})")
            if not 0 <= t_idx < t_depth:
                raise ConfigError(f"{key}.layers", f"teacher block {t_idx} is out of range: the teacher has {t_depth} blocks (0..{t_depth - 1})")
        if s["method"] in ("spectral", "mse") and s_width > t_width:
            raise ConfigError(f"{key}.method", f"{s['method']} pools teacher channels to the student's width, "
                                               f"but the student ({s_width}) is wider than the teacher ({t_width})")
    return cfg


# ---------------------------------------------------------------- job specs


def _data_and_models(cfg: dict) -> tuple[dict, object, dict]:
    from .data import describe

    info = describe(cfg["data"])
    return cfg["data"], info, _model_shapes(cfg, info)


def teacher_spec(cfg: dict) -> dict:
    """Everything the teacher job reads; a change here (and only here) re-runs it."""
    t = cfg["teacher"]
    return {"role": "teacher", "name": "teacher", "seed": t["seed"], "data": cfg["data"],
            "model": {"model": t["model"], "overrides": t["overrides"]}, "train": t["train"],
            "checkpoint": t["checkpoint"], "label_smoothing": cfg["distill"]["label_smoothing"],
            "checkpoint_epochs": checkpoint_epochs(t["train"])}


def student_spec(cfg: dict, setting: str, seed: int, shapes: dict | None = None) -> dict:
    """Everything one student job reads: its setting (weights resolved), models, data and training."""
    if shapes is None:
        shapes = _data_and_models(cfg)[2]
    depths = (shapes["student"][0], shapes["teacher"][0])
    s = cfg["student"]
    return {"role": "student", "name": setting, "seed": int(seed), "data": cfg["data"],
            "model": {"model": s["model"], "overrides": s["overrides"]},
            "teacher_model": {"model": cfg["teacher"]["model"], "overrides": cfg["teacher"]["overrides"]},
            "train": s["train"], "setting": resolved_setting(cfg, get_setting(cfg, setting), depths),
            "checkpoint_epochs": checkpoint_epochs(s["train"])}
