"""Distillation methods: one module each, registered by name (as timm registers models).

    python -m distdyn.methods      every built-in method: parameters (type, default), roles, teacher, parts

A method is a subclass of `distdyn.methods.base.Method` (an nn.Module) that declares its name, its
parameters (`Param`: type, default, bounds), the role of each of its (student block, teacher block)
pairs, whether it reads the teacher, and its trainable parts; its forward gives the feature term of
the loss (distdyn.losses adds cross-entropy and logit KD). docs/methods.md has the whole contract.

Built-ins live here, one module per method, and are imported only when asked for: the training
engine imports this registry and nothing else of the package, so a training job's code fingerprint
is the engine's plus its own method's file, and the teacher's carries none (docs/incremental.md). A
user's method is named in the config as `package.module:Class` (importable from the working
directory) or `path/to/file.py:Class` (relative to it).

No torch here: the claims read `PAPER_FEATURE_METHODS`, and the Snakefile the registry, cheaply.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import DistdynError

# The paper's methods (paper.md section 3); its claims are judged on these only (distdyn.claims).
PAPER_METHODS = ("none", "logit", "spectral", "projector", "mse")
PAPER_FEATURE_METHODS = ("spectral", "projector", "mse")
BASE = "base"  # the module of the base class, no method
TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


class MethodError(DistdynError):
    """A method that cannot be found or loaded (`where`: the method's name as the config gives it)."""


class ParamError(ValueError):
    """A bad method parameter: `name` is the parameter, the message says what is wrong."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(message)


@dataclass(frozen=True)
class Param:
    """A method parameter: its type (bool, int, float or str), default, bounds and meaning."""

    type: type
    default: object
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive: bool = False  # bounds exclusive

    def check(self, name: str, value):
        """The value as the type (an int is a float where a float is asked); ParamError if it is none."""
        kind = TYPES[self.type]
        if isinstance(value, str) and self.type is not str:
            value = _scalar(value, self.type)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise ParamError(name, f"must be a {kind}, not {value!r}")
        for bound, outside in ((self.minimum, lambda b: value < b or (self.exclusive and value == b)),
                               (self.maximum, lambda b: value > b or (self.exclusive and value == b))):
            if bound is not None and outside(bound):
                side = "above" if bound == self.minimum else "below"
                raise ParamError(name, f"must be {side} {bound}{'' if self.exclusive else ' or equal to it'}, "
                                       f"not {value!r}")
        return value


def _scalar(text: str, kind: type):
    """A number or boolean written as a string (PyYAML reads `1e-3` as one, Snakemake's --config gives
    strings), as the config's own keys are coerced (distdyn.config.coerce_scalars); else the string."""
    try:
        return {bool: lambda t: {"true": True, "false": False}[t.strip().lower()], int: int, float: float}[kind](text)
    except (KeyError, ValueError):
        return text


_METHODS: dict[str, type] = {}


def register_method(cls: type) -> type:
    """Class decorator: register a method under its `name` (as timm.models.register_model)."""
    name = cls.name
    if not name:
        raise ValueError(f"{cls.__qualname__}: a registered method needs a `name`")
    if name in _METHODS and _METHODS[name].__qualname__ != cls.__qualname__:
        raise ValueError(f"method {name!r} is registered twice ({_METHODS[name].__qualname__}, {cls.__qualname__})")
    _METHODS[name] = cls
    return cls


def builtin_methods() -> list[str]:
    """The names of the built-in methods: this package's modules (not imported)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and m.name != BASE)


def is_user_method(method: str) -> bool:
    """`module:Class` or `file.py:Class`, not a built-in's name."""
    return ":" in method


def get_method(method: str) -> type:
    """The class of a built-in method (by name) or a user's (`module:Class`, `file.py:Class`); MethodError else."""
    if method in _METHODS:
        return _METHODS[method]
    if is_user_method(method):
        _METHODS[method] = _load_user_method(method)
        return _METHODS[method]
    names = builtin_methods()
    if method not in names:
        close = difflib.get_close_matches(method, names, n=1)
        raise MethodError(method, f"no such method{f' (did you mean {close[0]}?)' if close else ''}: the built-in "
                                  f"ones are {', '.join(names)}; your own is `package.module:Class` or "
                                  f"`path/to/file.py:Class` (docs/methods.md)")
    importlib.import_module(f"{__name__}.{method}")
    return _METHODS[method]


def list_methods() -> list[type]:
    """Every built-in method's class, by name."""
    return [get_method(name) for name in builtin_methods()]


def needs_teacher(method: str) -> bool:
    """Whether a setting with this method reads the teacher (every built-in but none does)."""
    return get_method(method).reads_teacher


def resolve_params(cls: type, given: dict | None) -> dict:
    """The method's parameters: `given` checked against its declaration, the rest at their defaults.
    ParamError names the first unknown or bad one."""
    given = dict(given or {})
    declared = cls.params
    for name in given:
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            known = f"its parameters are {', '.join(declared)}" if declared else "it has no parameters"
            raise ParamError(name, f"method {display_name(cls)} has no parameter {name!r}"
                                   f"{f' (did you mean {close[0]}?)' if close else ''}; {known}")
    return {name: p.check(name, given.get(name, p.default)) for name, p in declared.items()}


def display_name(cls: type) -> str:
    return getattr(cls, "ref", None) or cls.name


def _load_user_method(ref: str) -> type:
    """A user's method class from `module:Class` or `file.py:Class` (a file relative to the working directory)."""
    target, _, attr = ref.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise MethodError(ref, f"no file {target} (a method file's path is relative to the working directory)")
        name = f"distdyn_user_method_{path.stem}_{abs(hash(str(path.resolve()))):x}"  # two files of one name apart
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # as `python -m` jobs see it: the working directory first
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise MethodError(ref, f"cannot import {target} ({e}); put it in the working directory or on "
                                   f"PYTHONPATH, or give a file: path/to/file.py:{attr}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise MethodError(ref, f"{target} defines no {attr}")
    if not isinstance(cls, type) or not any(f"{c.__module__}.{c.__qualname__}" == f"{__name__}.{BASE}.Method"
                                            for c in cls.__mro__):
        raise MethodError(ref, f"{attr} is no subclass of distdyn.methods.base.Method (docs/methods.md)")
    cls.ref = ref
    return cls


def describe(cls: type) -> str:
    """One method's declaration in a few lines (what `python -m distdyn.methods` prints)."""
    params = ", ".join(f"{n} ({TYPES[p.type]}, default {p.default!r})" for n, p in cls.params.items()) or "none"
    lines = [f"{display_name(cls)}: {(cls.__doc__ or '').strip().splitlines()[0]}",
             f"    parameters: {params}",
             f"    pairs: {'roles ' + ', '.join(cls.roles) if cls.uses_pairs else 'none (no layers)'}; "
             f"reads the teacher: {'yes' if cls.reads_teacher else 'no'}; "
             f"trainable parts: {', '.join(cls.parts) or 'none'}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m distdyn.methods", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("methods", nargs="*", help="methods to describe (default: every built-in)")
    args = p.parse_args(argv)
    for cls in [get_method(m) for m in args.methods] or list_methods():
        print(describe(cls))
    return 0
