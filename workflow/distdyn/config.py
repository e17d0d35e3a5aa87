"""Configuration: schema validation with defaults, cross-field checks, and per-job specs.

The Snakefile validates with Snakemake's own `validate` and then calls
`check_config`; `load_config` does both for Python users and tests.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import yaml

from .errors import DistdynError, cli
from .io import write_text
from .schema import key_view, read_schema

FIRST_LAST = {"first": ("first",), "last": ("last",), "first_last": ("first", "last")}


class ConfigError(DistdynError):
    """A configuration problem; `where` (and the message) start with the offending key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config key '{key}'", message)
        self.init_args = (key, message)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_SCALARS = {"integer": lambda v: int(v) if re.fullmatch(r"[-+]?\d+", v) else None,
            "number": lambda v: float(v) if _NUMBER.match(v) else None,
            "boolean": lambda v: {"true": True, "false": False}.get(v.lower()),
            "null": lambda v: ... if v.lower() in ("null", "none", "~") else None}


def coerce_scalars(value, schema: dict, root: dict | None = None):
    """`value` with numbers, booleans and nulls written as strings turned into what the schema expects.

    PyYAML reads `1e-3` as a string, and Snakemake's `--config key=[0, 1]` gives strings throughout;
    a string is converted only where the schema does not accept a string at that place.
    """
    import jsonschema

    root = root or schema
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    for branch in schema.get("oneOf", schema.get("anyOf", [])):
        candidate = coerce_scalars(value, branch, root)
        if jsonschema.Draft202012Validator(branch).is_valid(candidate):
            return candidate
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: coerce_scalars(v, props[k], root) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [coerce_scalars(v, schema["items"], root) for v in value]
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, str) and "string" not in types:
        for t in ("integer", "number", "boolean", "null"):
            if t in types and (out := _SCALARS[t](value.strip())) is not None:
                return None if out is ... else out
    return value


def validate_schema(cfg: dict) -> dict:
    """Coerce scalars written as strings, validate against the JSON Schema and fill in every default, in place."""
    import jsonschema

    schema = read_schema()
    cfg.update(coerce_scalars(cfg, schema))

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    validator_cls = jsonschema.validators.extend(base, {"properties": set_defaults})
    errors = sorted(validator_cls(schema).iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError(*schema_problem(errors[0], cfg, schema))
    return cfg


# ---------------------------------------------------------------- schema errors in words

_NOUNS = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
          "null": "null", "array": "a list", "object": "a mapping of keys"}
_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def _resolve(node: dict, root: dict) -> dict:
    if "$ref" not in node:
        return node
    target = root
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def allowed_values(node: dict, root: dict) -> str:
    """What a schema node accepts, in words: its `allowed` text where the schema has one (a pattern has no
    plain reading), else from its enum, oneOf branches, types and bounds."""
    node = _resolve(node, root)
    if "allowed" in node:
        return node["allowed"]
    if "enum" in node:
        return "one of " + ", ".join(str(v) for v in node["enum"])
    branches = node.get("oneOf") or node.get("anyOf")
    if branches:
        return ", or ".join(allowed_values(b, root) for b in branches)
    types = node.get("type", [])
    words = []
    for t in [types] if isinstance(types, str) else types:
        word = _NOUNS[t]
        if t in ("integer", "number"):
            word += " and".join(f" {op} {node[b]}" for b, op in _BOUNDS.items() if b in node)
        if t == "array":
            if "minItems" in node:
                word += f" of at least {node['minItems']}"
            if isinstance(node.get("items"), dict):
                word += f" (each {allowed_values(node['items'], root)})"
        words.append(word)
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else "".join(words) or "any value"


def config_key(path, cfg: dict) -> str:
    """A config key from a schema error's path: list items by index, a setting or extra model also by name,
    e.g. settings[1] (logit).method."""
    key, node = "", cfg
    for part in path:
        if isinstance(part, int):
            key += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str) and key.count("[") == 1:
                key += f" ({node['name']})"
        else:
            key += f".{part}" if key else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return key


def schema_problem(error, cfg: dict, root: dict) -> tuple[str, str]:
    """(config key, message) for a jsonschema error: what was given and, in words, what the key accepts."""
    import difflib

    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in known]
        close = difflib.get_close_matches(str(unknown[0]), known, n=1)
        where = config_key(path, cfg)
        return (config_key(path + [unknown[0]], cfg),
                f"is not a key {where or 'the top level'} takes{f' (did you mean {close[0]}?)' if close else ''}; "
                f"{where or 'the top level'} takes {', '.join(known)}")
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        return (config_key(path, cfg) or "<root>",
                f"lacks {missing}; each entry needs {' and '.join(error.validator_value)}")
    given = repr(error.instance)
    given = given if len(given) <= 60 else given[:57] + "..."
    return config_key(path, cfg) or "<root>", f"{given} is not allowed: it takes {allowed_values(error.schema, root)}"


def load_config(source: str | Path | dict) -> dict:
    """Read (if a path), validate, fill defaults and run the cross-field checks."""
    cfg = copy.deepcopy(source) if isinstance(source, dict) else read_config_files([source])
    validate_schema(cfg)
    check_config(cfg)
    return cfg


def read_config_files(paths) -> dict:
    """The config that YAML files give, merged in order as Snakemake merges --configfile files (mappings
    key by key, anything else replaced); a file that is missing or no YAML mapping is a DistdynError naming it."""
    from .errors import yaml_problem

    def merge(dst: dict, src: dict) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                merge(dst[k], v)
            else:
                dst[k] = copy.deepcopy(v)

    cfg: dict = {}
    for path in paths:
        if problem := yaml_problem(path):
            raise DistdynError(path, problem)
        with open(path) as f:
            merge(cfg, yaml.safe_load(f) or {})
    return cfg


@cli
def main(argv: list[str] | None = None) -> int:
    """python -m distdyn.config [FILE ...]: check an experiment config as the Snakefile does at plan time,
    without Snakemake (the files merged in order, as after one --configfile; default config.yaml)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m distdyn.config", description=main.__doc__)
    p.add_argument("files", nargs="*", default=["config.yaml"], help="YAML config files (default: config.yaml)")
    a = p.parse_args(argv)
    cfg = load_config(read_config_files(a.files))
    print(f"{' + '.join(a.files)}: valid ({len(cfg['settings'])} settings x {len(cfg['seeds'])} seeds, "
          f"{len(cfg['extra_models'])} extra models)")
    return 0


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


ENGINE_KEYS = ("alpha", "tau", "feature_weight", "label_smoothing")  # the weights of losses.DistillationLoss


def resolved_setting(cfg: dict, setting: dict, depths: tuple[int, int]) -> dict:
    """A setting with every weight filled in (the setting's, its method's default feature_weight, or
    `distill`'s), its layer pairs made explicit and its method's parameters resolved: those the setting
    gives under `params`, a method parameter that is also a setting or `distill` key
    (projector_trainable) from there, the rest at the method's defaults."""
    from .methods import get_method, resolve_params

    cls = get_method(setting["method"])
    out = {k: setting.get(k, cfg["distill"][k]) for k in ENGINE_KEYS}
    if "feature_weight" not in setting and cls.feature_weight is not None:
        out["feature_weight"] = cls.feature_weight
    out.update(name=setting["name"], method=setting["method"])
    out["pairs"] = resolve_pairs(setting["layers"], *depths) if cls.uses_pairs else []
    shared = {p: setting.get(p, cfg["distill"][p]) for p in cls.params if p in setting or p in cfg["distill"]}
    out["params"] = resolve_params(cls, {**shared, **setting.get("params", {})})
    return out


def setting_names(cfg: dict) -> list[str]:
    return [s["name"] for s in cfg["settings"]]


PRETRAINED_TEACHER = "results/models/teacher/weights.pt"


def teacher_start(cfg: dict) -> str | None:
    """The weights the teacher starts from: teacher.checkpoint, the fetched pretrained weights, or None."""
    t = cfg["teacher"]
    return t["checkpoint"] or (PRETRAINED_TEACHER if t["pretrained"] is not False else None)


def get_setting(cfg: dict, name: str) -> dict:
    for s in cfg["settings"]:
        if s["name"] == name:
            return s
    raise ConfigError("settings", f"no setting named {name!r}")


# ---------------------------------------------------------------- cross-field checks


def _model_shapes(cfg: dict, info) -> dict[str, tuple[int, int]]:
    return {role: _build_shape(role, cfg[role], info) for role in ("teacher", "student")}


def _build_shape(key: str, model_cfg: dict, info) -> tuple[int, int]:
    from .models import describe_model

    try:
        return describe_model(model_cfg, info.num_classes, info.in_chans)
    except Exception as e:  # noqa: BLE001 - timm raises many types for bad kwargs
        raise ConfigError(f"{key}.model", f"cannot build {model_cfg['model']!r} with overrides "
                                          f"{model_cfg['overrides']}: {e}") from e


def _check_train(key: str, train: dict) -> None:
    """A training section: a timm optimizer, GPUs that split over the nodes, a batch that splits across the GPUs,
    checkpoint epochs within the run."""
    import difflib

    from timm.optim import list_optimizers

    known = list_optimizers()
    name = train["opt"].lower().split("_")[-1]  # as timm parses it ("lookahead_adamw" is adamw with lookahead)
    if name not in known:
        close = ", ".join(difflib.get_close_matches(name, known, n=3))
        raise ConfigError(f"{key}.opt", f"timm has no optimizer {train['opt']!r}"
                                        f"{f' (did you mean {close}?)' if close else ''}; "
                                        f"the names are timm.optim.list_optimizers(), e.g. adamw, sgd, lamb")
    if train["gpus"] % train["nodes"]:
        raise ConfigError(f"{key}.nodes", f"{key}.gpus = {train['gpus']} processes do not split evenly over "
                                          f"{train['nodes']} nodes: make {key}.gpus a multiple of {key}.nodes")
    if train["batch_size"] % train["gpus"]:
        raise ConfigError(f"{key}.batch_size", f"{train['batch_size']} does not split evenly across "
                                               f"{key}.gpus = {train['gpus']} processes")
    every, epochs = train["checkpoint_every"], train["epochs"]
    beyond = [e for e in ([every] if isinstance(every, int) and every else every or []) if e > epochs]
    if beyond:
        raise ConfigError(f"{key}.checkpoint_every", f"epoch {beyond[0]} is beyond the run's {epochs} epochs "
                                                     f"({key}.epochs); checkpoints can be saved after epochs "
                                                     f"1..{max(epochs - 1, 0)} (the last epoch is always final.pt)")


def _check_input_size(key: str, model_cfg: dict, info) -> None:
    """The data's image size is the one the model is built for (timm's ViTs refuse any other)."""
    from .models import input_size

    need = input_size(model_cfg, info.num_classes, info.in_chans)
    if need is not None and tuple(need) != (info.img_size, info.img_size):
        raise ConfigError(f"{key}.overrides.img_size", f"{model_cfg['model']} is built for {need[0]}x{need[1]} "
                                                       f"images, the data gives {info.img_size}x{info.img_size}: set "
                                                       f"{key}.overrides.img_size: {info.img_size} (or data.img_size: "
                                                       f"{need[0]} to resize the images)")


def _check_weights_file(key: str, path) -> None:
    """A checkpoint or weights file given in the config looks like one (its first and last bytes only)."""
    from .models import weights_file_problem

    problem = weights_file_problem(path)
    if problem:
        raise ConfigError(key, problem)


def check_config(cfg: dict) -> dict:
    """Checks the schema cannot express; each raises one ConfigError naming the key."""
    from .data import DataError
    from .models import is_weights_file

    if not cfg["settings"] and not cfg["extra_models"]:
        raise ConfigError("settings", "nothing to run: give distillation settings, or extra_models to analyse")
    res = cfg["resources"]
    if res["max_runtime"] is not None and res["max_runtime"] <= res["startup_minutes"]:
        raise ConfigError("resources.max_runtime", f"{res['max_runtime']} minutes leaves no time to train after "
                                                   f"resources.startup_minutes ({res['startup_minutes']}): raise it")
    seeds = [int(s) for s in cfg["seeds"]]
    if len(set(seeds)) != len(seeds):
        twice = next(s for s in seeds if seeds.count(s) > 1)
        raise ConfigError("seeds", f"seed {twice} is listed twice: each seed is one run, and a repeated one would "
                                   f"count the same run twice in n_seeds and the standard deviation")
    seen = {"teacher": "the teacher"}
    entries = [("settings", i) for i in range(len(cfg["settings"]))] + \
              [("extra_models", i) for i in range(len(cfg["extra_models"]))]
    for key, name in [(f"{config_key(e, cfg)}.name", cfg[e[0]][e[1]]["name"]) for e in entries]:
        if name in seen and key.startswith("settings") and seen[name].startswith("settings"):
            raise ConfigError(key, f"two settings are named {name!r}")
        if name in seen:
            raise ConfigError(key, f"{name!r} is already the name of {seen[name]}: names of settings and extra "
                                   f"models share the tables, so they must be unique ('teacher' is reserved)")
        seen[name] = key.removesuffix(".name")
    for key, entry in [("teacher", cfg["teacher"])] * bool(cfg["settings"]) + \
                      [(config_key(["extra_models", i], cfg), m) for i, m in enumerate(cfg["extra_models"])]:
        if entry["checkpoint"] and entry["pretrained"] is not False:
            raise ConfigError(f"{key}.pretrained", f"give either {key}.checkpoint or {key}.pretrained, not both")
        if entry["checkpoint"]:
            _check_weights_file(f"{key}.checkpoint", entry["checkpoint"])
        if is_weights_file(entry["pretrained"]):
            _check_weights_file(f"{key}.pretrained", entry["pretrained"])
        if key != "teacher" and not entry["checkpoint"] and entry["pretrained"] is False:
            raise ConfigError(f"{key}.checkpoint", "an extra model needs its weights: a checkpoint or pretrained")
    if cfg["settings"] and not teacher_start(cfg) and cfg["teacher"]["train"]["epochs"] < 1:
        raise ConfigError("teacher.train.epochs",
                          "must be at least 1 when no teacher.checkpoint or teacher.pretrained is given")
    if cfg["settings"] and cfg["student"]["train"]["epochs"] < 1:
        raise ConfigError("student.train.epochs", "must be at least 1")
    for role in ("teacher", "student") if cfg["settings"] else ():
        _check_train(f"{role}.train", cfg[role]["train"])
    try:
        info = data_info(cfg["data"])
    except DataError as e:
        # A key names itself; a damaged file is named under the key that points to its folder.
        key = e.where if e.where.startswith(("data.", "probe.")) and "/" not in e.where else None
        raise (ConfigError(key, e.message) if key else ConfigError("data.root", str(e))) from None
    if cfg["probe"]["size"] > info.val_size:
        raise ConfigError("probe.size", f"{cfg['probe']['size']} probe images requested, "
                                        f"the validation split has {info.val_size}")
    for i, m in enumerate(cfg["extra_models"]):
        _build_shape(config_key(["extra_models", i], cfg), m, info)
        _check_input_size(config_key(["extra_models", i], cfg), m, info)
    if not cfg["settings"]:
        return cfg
    shapes = _model_shapes(cfg, info)
    for role in ("teacher", "student"):
        _check_input_size(role, cfg[role], info)
    (t_depth, t_width), (s_depth, s_width) = shapes["teacher"], shapes["student"]
    for i, s in enumerate(cfg["settings"]):
        _check_setting(cfg, i, s, (s_depth, t_depth), (s_width, t_width))
    return cfg


def _check_setting(cfg: dict, i: int, s: dict, depths: tuple[int, int], widths: tuple[int, int]) -> None:
    """One setting: its method exists, its layers fit the models and the method, its parameters are the method's."""
    from .methods import MethodError, ParamError, get_method, resolve_params

    key = config_key(["settings", i], cfg)
    try:
        cls = get_method(s["method"])
    except MethodError as e:
        raise ConfigError(f"{key}.method", f"{s['method']!r}: {e.message}") from None
    name = getattr(cls, "ref", None) or cls.name
    if cls.uses_pairs and "layers" not in s:
        raise ConfigError(f"{key}.layers", f"method {name} needs layers (first, last, first_last or pairs)")
    if not cls.uses_pairs and "layers" in s:
        raise ConfigError(f"{key}.layers", f"method {name} uses no feature loss; remove layers")
    try:
        shared = {p: s[p] for p in cls.params if p in s}
        resolve_params(cls, {**shared, **s.get("params", {})})
    except ParamError as e:
        raise ConfigError(f"{key}.params.{e.name}", str(e)) from None
    if not cls.uses_pairs:
        return
    (s_depth, t_depth), (s_width, t_width) = depths, widths
    pairs = resolve_pairs(s["layers"], s_depth, t_depth)
    for s_idx, t_idx in pairs:
        if not 0 <= s_idx < s_depth:
            raise ConfigError(f"{key}.layers", f"student block {s_idx} is out of range: "
                                               f"the student has {s_depth} blocks (0..{s_depth - 1})")
        if not 0 <= t_idx < t_depth:
            raise ConfigError(f"{key}.layers", f"teacher block {t_idx} is out of range: "
                                               f"the teacher has {t_depth} blocks (0..{t_depth - 1})")
    if problem := cls.check_pairs(pairs):
        raise ConfigError(f"{key}.layers", problem)
    if cls.narrow_student and s_width > t_width:
        raise ConfigError(f"{key}.method", f"{name} pools teacher channels to the student's width, "
                                           f"but the student ({s_width}) is wider than the teacher ({t_width})")


# ---------------------------------------------------------------- job specs


_DATA_INFO: dict[str, object] = {}
DATA_INFO_CACHE = Path("results/.cache/data_info")


def data_info(data_cfg: dict):
    """data.describe, once per data config and process: the checks and the job specs both ask.

    An ImageFolder's description walks its whole tree (1.3 M files for ImageNet), and every SLURM job
    parses the Snakefile again: it is kept on disk, keyed by the config and the modification times of
    the class folders (which change when a file is added or removed), so only the first parse walks.
    Its `content` (data.content_digest) stands for the data in the workflow's specs (run_spec).
    """
    from .data import DataInfo, describe

    key = json.dumps(data_cfg, sort_keys=True, default=str)
    if key not in _DATA_INFO:
        stamp = _folder_stamp(data_cfg) if data_cfg["source"] == "imagefolder" else None
        name = hashlib.sha256((key + json.dumps(stamp) + "content").encode()).hexdigest()[:20]  # (with content)
        cached = DATA_INFO_CACHE / f"{name}.json"
        if stamp is not None and cached.is_file():
            _DATA_INFO[key] = DataInfo(**json.loads(cached.read_text()))
        else:
            _DATA_INFO[key] = describe(data_cfg)
            if stamp is not None:
                write_text(json.dumps(dataclasses.asdict(_DATA_INFO[key])), cached)
    return _DATA_INFO[key]


def _folder_stamp(data_cfg: dict) -> list | None:
    """(path, mtime_ns) of an ImageFolder's train/ and val/ and their class folders; None if absent."""
    root = Path(data_cfg["root"] or "").expanduser()
    try:
        return [[str(d), d.stat().st_mtime_ns] for part in ("train", "val") for d in [root / part]
                + sorted(Path(e.path) for e in os.scandir(root / part) if e.is_dir())]
    except OSError:
        return None  # describe() names what is missing


def run_spec(spec: dict) -> dict:
    """A job's spec as the rules pass it (params.spec, a rerun trigger) and as its key hashes it: without the
    keys that change no result (distdyn.schema.TUNING: CPU threads, loader workers, the data's path), which
    the job gets on its command line (data_flags, --threads), and with the data's content digest in place of
    its path: a new mount point or worker count re-runs nothing and keeps a killed run's resume state."""
    out = key_view(spec)
    return {**out, "data": {**out["data"], "content": data_info(spec["data"]).content}}


def data_environment(data_cfg: dict) -> dict[str, str]:
    """The TUNING keys of data (its folder, the loader workers) as the environment the jobs inherit from the
    process that plans them: their shell commands pass `--data-root "$DISTDYN_DATA_ROOT" --num-workers
    $DISTDYN_NUM_WORKERS` (an empty root: the source's default). Neither a param (a rerun trigger) nor a
    Snakefile variable formatted into the command (which `snakemake --lint` refuses)."""
    return {"DISTDYN_DATA_ROOT": "" if data_cfg["root"] is None else str(data_cfg["root"]),
            "DISTDYN_NUM_WORKERS": str(data_cfg["num_workers"])}


def _data_and_models(cfg: dict) -> tuple[dict, object, dict]:
    info = data_info(cfg["data"])
    return cfg["data"], info, _model_shapes(cfg, info)


def teacher_spec(cfg: dict) -> dict:
    """Everything the teacher job reads; a change here (and only here) re-runs it."""
    t = cfg["teacher"]
    return {"role": "teacher", "name": "teacher", "seed": t["seed"], "data": cfg["data"],
            "model": {"model": t["model"], "overrides": t["overrides"]}, "train": t["train"],
            "checkpoint": teacher_start(cfg), "label_smoothing": cfg["distill"]["label_smoothing"],
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


if __name__ == "__main__":
    raise SystemExit(main())
