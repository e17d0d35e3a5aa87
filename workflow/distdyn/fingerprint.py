"""Content fingerprints of the code each workflow stage runs.

    python -m distdyn.fingerprint [MODULE|RULE ...]   each stage's fingerprint and the files it covers

A stage is the module a rule's job executes (`python -m distdyn.metrics ...`). Its code is
that module, every `distdyn` module it imports, transitively (top-level and function-local
imports, absolute and relative), the package's `__init__.py`, and the non-Python files those
modules name in a module-level `FINGERPRINT_FILES = ("_kernels.c",)` (paths relative to the
module). The rules record the fingerprint as a `params` entry, so Snakemake's params trigger
re-runs a job exactly when the content of its code changed, not when a file's time did.

Only behaviour counts: a Python file is hashed as its syntax tree without docstrings (so
comments, blank lines, formatting and docstrings do not), a C file without comments, blank
lines, indentation or repeated spaces, any other file byte for byte.

This module is imported by the Snakefile each time Snakemake starts (in every SLURM job too):
it parses a dozen files with `ast`, imports nothing it fingerprints, and never torch.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import re
import sys
from pathlib import Path

PACKAGE = "distdyn"
DECLARED = "FINGERPRINT_FILES"  # module-level tuple of non-Python files the module loads
C_SUFFIXES = (".c", ".h")
SHORT = 12  # hex digits of a stage digest
FILE_SHORT = 8  # hex digits per file in the params value

_cache: dict[tuple, tuple] = {}


def package_root() -> Path:
    """The directory holding the `distdyn` package (this file's package's parent)."""
    return Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- canonical forms


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Drop every statement that is a bare string (docstrings of modules, classes, functions, attributes)."""
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if isinstance(body, list):
                body[:] = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                                   and isinstance(s.value.value, str))]
    return tree


def _canonical(node) -> str:
    """The tree's fields (no positions), skipping None and empty lists so that Python versions
    which add optional fields (type_params, ...) give the same text for the same code."""
    if isinstance(node, ast.AST):
        parts = [type(node).__name__]
        for name in node._fields:
            value = getattr(node, name, None)
            if value is None or value == [] or (name == "kind" and isinstance(node, ast.Constant)):
                continue  # kind: the u"" prefix, spelling only
            parts.append(f"{name}={_canonical(value)}")
        return "(" + " ".join(parts) + ")"
    if isinstance(node, list):
        return "[" + ",".join(_canonical(v) for v in node) + "]"
    return repr(node)


def python_canonical(source: str | bytes, filename: str = "<source>") -> str:
    """What of a Python file can change behaviour: its syntax tree without docstrings."""
    return _canonical(_strip_docstrings(ast.parse(source, filename)))


def c_canonical(source: str) -> str:
    """C source without comments, blank lines, indentation or repeated blanks (string and
    character literals kept verbatim; line splices joined first, as the compiler does)."""
    text = source.replace("\r\n", "\n").replace("\\\n", "")
    out: list[str] = []
    i, n = 0, len(text)

    def blank():
        if out and out[-1] not in (" ", "\n"):
            out.append(" ")

    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            blank()  # a comment is one space
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif c == "\n":
            if out and out[-1] == " ":
                out.pop()
            if out and out[-1] != "\n":
                out.append("\n")
            i += 1
        elif c in " \t\f\v":
            blank()
            i += 1
        else:
            out.append(c)
            i += 1
    lines = (line.strip() for line in "".join(out).split("\n"))
    return "\n".join(line for line in lines if line)


def file_canonical(path: Path, raw: bytes | None = None) -> bytes:
    """What of a file counts: Python and C as above, anything else byte for byte."""
    raw = path.read_bytes() if raw is None else raw
    if path.suffix == ".py":
        return python_canonical(raw, str(path)).encode()
    if path.suffix in C_SUFFIXES:
        return c_canonical(raw.decode()).encode()
    return raw


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- imports


def module_path(module: str, root: Path) -> Path | None:
    """The file of a module of the package under root, or None if there is none."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]  # a module's relative imports start from its package
    if level > 1:
        parts = parts[:len(parts) - (level - 1)]
    return ".".join(parts + ([target] if target else []))


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name the tree may import (anywhere, function-local imports included);
    for `from X import a`, both X and X.a (a may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module if node.level == 0 else _resolve_relative(module, is_package, node.level, node.module)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module"
                   or getattr(node.func, "id", None) == "__import__")):
            names.add(node.args[0].value)
    return names


def _declared_files(tree: ast.Module, path: Path) -> list[Path]:
    """The files named by a module-level FINGERPRINT_FILES = ("a.c", ...) (relative to the module)."""
    files: list[Path] = []
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == DECLARED for t in targets):
            value = ast.literal_eval(node.value)
            for name in [value] if isinstance(value, str) else value:
                f = path.parent / name
                if not f.is_file():
                    raise FileNotFoundError(f"{path}: {DECLARED} names {name}, which does not exist")
                files.append(f)
    return files


def _module_info(module: str, path: Path) -> tuple[str, set[str], list[Path]]:
    """(content digest, imported module names, declared files) of one module file, cached per exact
    content (reading and hashing the bytes is cheap, parsing is what the cache saves)."""
    raw = path.read_bytes()
    key = ("module", module, str(path), _sha(raw))
    if key not in _cache:
        tree = ast.parse(raw, str(path))
        imports = _imported_names(tree, module, path.name == "__init__.py")
        declared = _declared_files(tree, path)
        digest = _sha(_canonical(_strip_docstrings(tree)).encode())
        _cache[key] = (digest, imports, declared)
    return _cache[key]


def _file_digest(path: Path) -> str:
    raw = path.read_bytes()
    key = ("file", str(path), _sha(raw))
    if key not in _cache:
        _cache[key] = (_sha(file_canonical(path, raw)),)
    return _cache[key][0]


def closure(entry: str, root: Path | None = None) -> dict[Path, str]:
    """Every file the entry module's code comes from (see the module doc), with its digest."""
    root = Path(root) if root is not None else package_root()
    top = entry.split(".")[0]
    if top != PACKAGE:
        raise ValueError(f"{entry}: not a {PACKAGE} module")
    files: dict[Path, str] = {}
    seen: set[str] = set()
    todo = [PACKAGE, entry]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_path(module, root)
        if path is None:
            if module == entry:
                raise ModuleNotFoundError(f"{entry}: no such module under {root}")
            continue  # `from distdyn.x import name`: name is not a submodule
        digest, imports, declared = _module_info(module, path)
        files[path] = digest
        for f in declared:
            files[f] = _file_digest(f)
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        todo.extend(m for m in (*imports, *parents) if m.split(".")[0] == PACKAGE and m not in seen)
    return dict(sorted(files.items()))


def stage_digest(files: dict[Path, str], root: Path) -> str:
    lines = "".join(f"{p.relative_to(root).as_posix()} {d}\n" for p, d in files.items())
    return _sha(lines.encode())[:SHORT]


def fingerprint(entry: str, root: Path | None = None) -> str:
    """The params value of a stage: its digest, then each covered file (relative to the package)
    with a short digest, so that the reason `snakemake -n` gives shows which file changed."""
    root = Path(root) if root is not None else package_root()
    files = closure(entry, root)
    pkg = root / PACKAGE
    listed = " ".join(f"{p.relative_to(pkg).as_posix()}={d[:FILE_SHORT]}" for p, d in files.items())
    return f"{entry} {stage_digest(files, root)}: {listed}"


# ---------------------------------------------------------------- methods


METHODS = f"{PACKAGE}.methods"


def method_files(method: str, root: Path | None = None, search: list[str] | None = None) -> dict[Path, str]:
    """The files of a distillation method's code, with their digests: a built-in's module and what it
    imports (its closure), or a user's (`package.module:Class`, `path/to/file.py:Class`) file, the files
    of its own package it imports, transitively, and the closures of the distdyn modules it imports.
    `search`: where a user's module is looked for (default: the working directory, then sys.path),
    without importing it."""
    root = Path(root) if root is not None else package_root()
    if ":" not in method:
        return closure(f"{METHODS}.{method}", root)
    target = method.rpartition(":")[0]
    if target.endswith(".py"):  # mylosses/mine.py is the module mylosses.mine, as imported from the working directory
        path = Path(target)
        parts = path.with_suffix("").parts
        module = ".".join(parts) if not path.is_absolute() and ".." not in parts else path.stem
    else:
        path, module = _find_module(target, search), target
        if path is None:
            raise ModuleNotFoundError(f"{target}: no such module in the working directory or on sys.path")
    files: dict[Path, str] = {}
    todo, seen = [(module, path)], set()
    while todo:
        module, path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        digest, imports, declared = _module_info(module, path)
        files[path] = digest
        for f in declared:
            files[f] = _file_digest(f)
        top = module.split(".")[0]
        for name in imports:
            if name.split(".")[0] == PACKAGE and module_path(name, root) is not None:
                files.update(closure(name, root))
            elif "." in module and name.split(".")[0] == top and (found := _find_module(name, search)) is not None:
                todo.append((name, found))
    return dict(sorted(files.items()))


def _find_module(name: str, search: list[str] | None = None) -> Path | None:
    """The file of an importable module, found as the import system would, without importing it."""
    from importlib.machinery import PathFinder

    paths = search if search is not None else [str(Path.cwd()), *sys.path]
    parts = name.split(".")
    spec = None
    for i in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[:i + 1]), paths)
        if spec is None:
            return None
        paths = list(spec.submodule_search_locations or [])
    return Path(spec.origin) if spec is not None and spec.has_location else None


def method_fingerprint(method: str, root: Path | None = None) -> str:
    """A method's part of a training job's params: `method NAME DIGEST: file=digest ...` (files of the
    package relative to it, a user's as given)."""
    root = Path(root) if root is not None else package_root()
    files = method_files(method, root)
    pkg = root / PACKAGE

    def name(p: Path) -> str:
        return p.relative_to(pkg).as_posix() if p.is_relative_to(pkg) else p.as_posix()

    digest = _sha("".join(f"{name(p)} {d}\n" for p, d in files.items()).encode())[:SHORT]
    return f"method {method} {digest}: " + " ".join(f"{name(p)}={d[:FILE_SHORT]}" for p, d in files.items())


# ---------------------------------------------------------------- CLI


RULE_RE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:")
USE_RE = re.compile(r"""code_fingerprint\(\s*["']([\w.]+)["']""")


def rules_by_stage(rules_dir: Path) -> dict[str, list[str]]:
    """Entry module -> the rules of workflow/rules/*.smk that record its fingerprint."""
    stages: dict[str, list[str]] = {}
    for smk in sorted(rules_dir.glob("*.smk")):
        rule = None
        for line in smk.read_text().splitlines():
            if line[:1].strip() and not line.startswith("#"):  # top-level code ends a rule's block
                m = RULE_RE.match(line)
                rule = m.group(1) if m else None
            if rule is not None:  # a helper's use (e.g. a store key) belongs to the rules that call it
                for module in USE_RE.findall(line):
                    stages.setdefault(module, []).append(rule)
    return stages


def runnable_modules(root: Path) -> list[str]:
    """Modules of the package with an `if __name__ == "__main__"` block."""
    found = []
    for path in sorted((root / PACKAGE).glob("*.py")):
        if path.stem != "fingerprint" and re.search(r"""^if __name__ == ["']__main__["']""", path.read_text(), re.M):
            found.append(f"{PACKAGE}.{path.stem}")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distdyn.fingerprint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("modules", nargs="*", metavar="MODULE|RULE",
                   help="entry modules (distdyn.metrics or metrics) or rule names (default: every module a rule runs)")
    p.add_argument("--root", type=Path, default=package_root(), help="directory holding the distdyn package")
    args = p.parse_args(argv)
    stages = rules_by_stage(args.root / "rules")
    rule_module = {rule: module for module, rules in stages.items() for rule in rules}
    named = [rule_module.get(m) or (m if m.startswith(f"{PACKAGE}.") else f"{PACKAGE}.{m}") for m in args.modules]
    modules = list(dict.fromkeys(named)) or sorted(stages) or runnable_modules(args.root)
    pkg = args.root / PACKAGE
    for module in modules:
        files = closure(module, args.root)
        used = f"  (rules: {', '.join(stages[module])})" if module in stages else ""
        print(f"{module}  {stage_digest(files, args.root)}{used}")
        for path, digest in files.items():
            print(f"    {digest[:SHORT]}  {path.relative_to(pkg).as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
