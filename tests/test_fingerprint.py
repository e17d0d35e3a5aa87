"""Content fingerprints of each stage's code (distdyn.fingerprint): what changes them and what does not."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distdyn import fingerprint as fp
from helpers import ROOT

PKG = ROOT / "workflow" / "distdyn"
MODULES = sorted(p.stem for p in PKG.glob("*.py"))


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A throwaway `distdyn` package under tmp_path/root; returns root."""
    pkg = tmp_path / "root" / "distdyn"
    pkg.mkdir(parents=True, exist_ok=True)
    files = {"__init__.py": '"""pkg."""\n__version__ = "1"\n', **files}
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    return pkg.parent


def _covered(entry: str, root: Path) -> set[str]:
    return {p.relative_to(root / "distdyn").as_posix() for p in fp.closure(entry, root)}


# ---------------------------------------------------------------- Python: what counts


SOURCE = '''\
"""Module docstring."""
import os


def f(x, y=2):
    """Function docstring."""
    return x + y  # a comment


class A:
    """Class docstring."""

    attr = 1
    """Attribute docstring."""

    def g(self):
        return [1, 2, 3]
'''

COSMETIC = '''\
# a new leading comment
"""Another module docstring, longer.

With a second paragraph.
"""

import os



def f(x,
      y = 2):
    # comment inside
    return (x
            + y)


class A:
    'A single-quoted docstring now.'
    attr = (1)

    def g(self):
        """New docstring where there was none."""
        return [
            1,
            2,
            3,
        ]
'''


def test_comments_docstrings_blank_lines_and_formatting_do_not_count():
    assert fp.python_canonical(SOURCE) == fp.python_canonical(COSMETIC)


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("x + y", "x - y"),
    lambda s: s.replace("y=2", "y=3"),
    lambda s: s.replace("attr = 1", "attr = 1.0"),
    lambda s: s.replace("import os", "import sys"),
    lambda s: s + "\nZ = 0\n",
    lambda s: s.replace("[1, 2, 3]", "(1, 2, 3)"),
], ids=["operator", "default", "constant-type", "import", "new-statement", "list-to-tuple"])
def test_behavioural_edits_count(edit):
    assert fp.python_canonical(edit(SOURCE)) != fp.python_canonical(SOURCE)


@pytest.mark.parametrize("module", MODULES)
def test_every_module_survives_a_full_reformat(module):
    """ast.unparse rewrites the whole file (quotes, line breaks, parentheses, no comments)."""
    src = (PKG / f"{module}.py").read_text()
    assert fp.python_canonical(ast.unparse(ast.parse(src))) == fp.python_canonical(src)


# ---------------------------------------------------------------- C


C_SOURCE = r'''/* header comment */
#include <stdint.h>
#define TWO 2 /* trailing */

static const char *s = "a /* not a comment */ // neither";

int f(int a, int b)
{
    // line comment
    return a + b * TWO; /* end */
}
'''


def test_c_comments_blank_lines_and_indentation_do_not_count():
    edited = ("// new first line\n/* a block\n   comment */\n\n"
              + C_SOURCE.replace("    return", "\n\t\t  return   ").replace("/* end */", "// other"))
    assert fp.c_canonical(edited) == fp.c_canonical(C_SOURCE)
    assert "/* not a comment */ // neither" in fp.c_canonical(C_SOURCE)
    assert "header" not in fp.c_canonical(C_SOURCE) and "trailing" not in fp.c_canonical(C_SOURCE)


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("a + b", "a - b"),
    lambda s: s.replace("#define TWO 2", "#define TWO 3"),
    lambda s: s.replace("not a comment", "not  a comment"),
    lambda s: s.replace("a + b", "a+b"),
], ids=["operator", "macro", "string-literal", "spacing-between-tokens"])
def test_c_code_edits_count(edit):
    assert fp.c_canonical(edit(C_SOURCE)) != fp.c_canonical(C_SOURCE)


def test_the_real_kernel_source_is_covered_by_the_metric_stage():
    covered = _covered("distdyn.metrics", ROOT / "workflow")
    assert {"_kernels.c", "kernels.py", "metrics.py", "__init__.py"} <= covered


def test_every_non_python_file_of_the_package_is_declared_by_a_module():
    """A file the package loads but no module declares would be outside every fingerprint."""
    declared = set()
    for path in PKG.glob("*.py"):
        declared |= {f.name for f in fp._declared_files(ast.parse(path.read_text()), path)}
    others = {p.name for p in PKG.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert others == declared


# ---------------------------------------------------------------- imports


def test_transitive_relative_absolute_and_function_local_imports(tmp_path):
    root = _package(tmp_path, {
        "entry.py": """
            import json
            from . import a
            from .b import thing

            def later():
                from distdyn.c import helper  # imported only when called
                import distdyn.d
                return helper
            """,
        "a.py": "from . import e\n",
        "b.py": "thing = 1\n",
        "c.py": "def helper():\n    from .f import x\n    return x\n",
        "d.py": "",
        "e.py": "",
        "f.py": "x = 1\n",
        "unused.py": "raise SystemExit\n",
    })
    assert _covered("distdyn.entry", root) == {"__init__.py", "entry.py", "a.py", "b.py", "c.py", "d.py", "e.py",
                                               "f.py"}
    assert _covered("distdyn.b", root) == {"__init__.py", "b.py"}


def test_declared_files_are_covered_and_hashed_without_comments(tmp_path):
    root = _package(tmp_path, {
        "k.py": 'FINGERPRINT_FILES = ("_k.c",)\n',
        "_k.c": "int f(void) { return 1; }\n",
        "user.py": "from .k import FINGERPRINT_FILES\n",
    })
    before = fp.fingerprint("distdyn.user", root)
    assert "_k.c=" in before
    c = root / "distdyn" / "_k.c"
    c.write_text("/* explained */\nint f(void) { return 1; } // really\n")
    assert fp.fingerprint("distdyn.user", root) == before
    c.write_text("int f(void) { return 2; }\n")
    after = fp.fingerprint("distdyn.user", root)
    assert after != before and after.split("_k.c=")[1] != before.split("_k.c=")[1]


def test_fingerprint_follows_content_names_changed_files_and_is_location_free(tmp_path):
    files = {"entry.py": "from .helper import h\n", "helper.py": "def h():\n    return 1\n"}
    root = _package(tmp_path / "one", files)
    other = _package(tmp_path / "two", files)
    value = fp.fingerprint("distdyn.entry", root)
    assert value == fp.fingerprint("distdyn.entry", other)  # a fresh clone elsewhere
    assert str(tmp_path) not in value and value.startswith("distdyn.entry ")
    helper = root / "distdyn" / "helper.py"
    helper.write_text('def h():\n    """Docstring."""\n    return 1  # one\n')
    assert fp.fingerprint("distdyn.entry", root) == value
    helper.write_text("def h():\n    return 2\n")
    changed = fp.fingerprint("distdyn.entry", root)
    assert changed != value
    old, new = (dict(w.split("=") for w in fp_.split(": ")[1].split()) for fp_ in (value, changed))
    assert [k for k in old if old[k] != new[k]] == ["helper.py"]


def test_unknown_entry_module_is_an_error(tmp_path):
    with pytest.raises(ModuleNotFoundError):
        fp.closure("distdyn.nope", _package(tmp_path, {}))
    with pytest.raises(ValueError):
        fp.closure("json", _package(tmp_path, {}))


# ---------------------------------------------------------------- the real package


def test_stages_cover_what_they_import_and_nothing_else():
    root = ROOT / "workflow"
    train = _covered("distdyn.train", root)
    assert {"train.py", "losses.py", "data.py", "models.py", "jobenv.py", "hashing.py", "__init__.py"} <= train
    assert "config.py" not in train  # config checks run where jobs are planned, not in jobs
    assert "config.py" not in _covered("distdyn.activations", root)
    # errors.py: the one error path (a bad input is one line) every entry point shares
    assert _covered("distdyn.plots", root) == {"__init__.py", "errors.py", "io.py", "plots.py"}
    # claims: its package with its data file (claims.yaml) and the `python -m` entry nothing imports
    # (__main__.py), the paper's methods' home (the methods registry), the schema's defaults and phases (tables.py),
    # not analysis.py
    claims = {f"claims/{m}" for m in ("__init__.py", "__main__.py", "beyond.py", "claims.yaml", "cli.py", "evidence.py",
                                      "render.py", "settings.py", "statements.py", "stats.py", "verdicts.py")}
    assert _covered("distdyn.claims", root) == {"__init__.py", "errors.py", "io.py", "methods/__init__.py",
                                                "schema.py", "tables.py", *claims}
    assert "fingerprint.py" not in _covered("distdyn.analysis", root)


def test_training_code_holds_the_method_registry_and_no_method():
    """The engine looks a setting's method up by name: its fingerprint covers no method's module, so the
    teacher's training carries none and a student's job adds its own (method_fingerprint)."""
    root = ROOT / "workflow"
    train = _covered("distdyn.train", root)
    builtins = {p.name for p in (PKG / "methods").glob("*.py")} - {"__init__.py", "__main__.py"}
    assert "methods/__init__.py" in train and "losses.py" in train
    assert not {f"methods/{m}" for m in builtins} & train
    for name in ("spectral", "vitkd"):
        files = {p.relative_to(PKG).as_posix() for p in fp.method_files(name, root)}
        assert f"methods/{name}.py" in files and "methods/base.py" in files
        assert not {f"methods/{m}" for m in builtins - {f"{name}.py", "base.py"}} & files
    assert fp.method_fingerprint("vitkd", root).startswith("method vitkd ")


USER_METHOD = '''
from distdyn.methods.base import PairwiseMethod
from mylosses import helpers


class Mine(PairwiseMethod):
    def pair_loss(self, i, fs, ft):
        return helpers.scale * (fs - ft).pow(2).mean()
'''


@pytest.mark.parametrize("ref", ["mylosses/mine.py:Mine", "mylosses.mine:Mine"])
def test_a_users_method_is_fingerprinted_by_its_files(ref, tmp_path, monkeypatch):
    """Its file and the files of its own package it imports, by content (not comments), and the distdyn
    modules it imports; found without importing it."""
    (tmp_path / "mylosses").mkdir()
    (tmp_path / "mylosses" / "__init__.py").write_text("")
    mine, helpers = tmp_path / "mylosses" / "mine.py", tmp_path / "mylosses" / "helpers.py"
    mine.write_text(USER_METHOD)
    helpers.write_text("scale = 2.0\n")
    monkeypatch.chdir(tmp_path)
    root = ROOT / "workflow"
    before = fp.method_fingerprint(ref, root)
    files = {p.name for p in fp.method_files(ref, root)}
    assert {"mine.py", "helpers.py", "base.py"} <= files  # a module of its own package is followed
    helpers.write_text("scale = 3.0\n")
    assert fp.method_fingerprint(ref, root) != before
    helpers.write_text("scale = 2.0\n")
    mine.write_text("# a comment\n" + USER_METHOD.replace("mean()", "mean()  # another"))
    assert fp.method_fingerprint(ref, root) == before
    mine.write_text(USER_METHOD.replace("mean()", "sum()"))
    changed = fp.method_fingerprint(ref, root)
    assert changed != before and "mine.py=" in changed
    with pytest.raises(ModuleNotFoundError):
        fp.method_files("absent.module:X", root)


def test_fingerprinting_is_cheap_and_imports_no_torch():
    code = ("import sys, time; t = time.perf_counter(); from distdyn.fingerprint import fingerprint; "
            "[fingerprint(f'distdyn.{m}') for m in "
            "('train', 'activations', 'metrics', 'analysis', 'plots', 'claims')]; "
            "print(time.perf_counter() - t, 'torch' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "workflow", capture_output=True, text=True,
                         check=True)
    seconds, torch_loaded, numpy_loaded = out.stdout.split()
    assert torch_loaded == "False" and numpy_loaded == "False"
    assert float(seconds) < 2.0


def test_cli_prints_each_stage_with_its_rules_and_files():
    out = subprocess.run([sys.executable, "-m", "distdyn.fingerprint"], cwd=ROOT / "workflow",
                         capture_output=True, text=True, check=True).stdout
    stages = {line.split()[0]: line for line in out.splitlines() if not line.startswith(" ")}
    assert set(stages) >= {"distdyn.train", "distdyn.activations", "distdyn.metrics", "distdyn.analysis",
                           "distdyn.plots", "distdyn.claims"}
    assert "pretrain_teacher" in stages["distdyn.train"] and "distill_student" in stages["distdyn.train"]
    assert "compute_metrics" in stages["distdyn.metrics"]
    digest = stages["distdyn.metrics"].split()[1]
    assert digest == fp.fingerprint("distdyn.metrics").split()[1].rstrip(":")
    assert "_kernels.c" in out
    for name in ("distdyn.plots", "plots", "plot"):  # a module, its short name, a rule that runs it
        one = subprocess.run([sys.executable, "-m", "distdyn.fingerprint", name], cwd=ROOT / "workflow",
                             capture_output=True, text=True, check=True).stdout.splitlines()
        assert one[0].startswith("distdyn.plots ")
        assert sorted(l.split()[1] for l in one[1:]) == ["__init__.py", "errors.py", "io.py", "plots.py"]


def test_every_rule_records_a_code_fingerprint():
    """A rule added without `params: code=code_fingerprint(...)` would never re-run for code changes."""
    rules_dir = ROOT / "workflow" / "rules"
    rules = {m.group(1) for smk in rules_dir.glob("*.smk") for line in smk.read_text().splitlines()
             if (m := fp.RULE_RE.match(line))}
    with_code = {r for stage in fp.rules_by_stage(rules_dir).values() for r in stage}
    assert rules and rules == with_code
