"""Helpers to run the real workflow on a copy of the repository in a temporary directory."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COPY = ("Snakefile", "workflow", "profiles", "envs")


def make_workdir(tmp: Path, config: dict) -> Path:
    """A copy of the workflow with `config` as its config.yaml."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, tmp / name)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run `python -m snakemake ARGS` in workdir with this interpreter."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run (`snakemake -n`)."""
    out = snakemake(workdir, "-n", "--cores", "2", "--quiet", "rules", *args).stdout
    counts, table = {}, False
    for line in out.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            table = True
            continue
        if table and len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


DOCS = ("README.md", "docs/*.md")


def documents() -> list[tuple[str, str]]:
    """(path, text) of the README and the pages under docs/."""
    paths = [p for pattern in DOCS for p in sorted(ROOT.glob(pattern))]
    return [(str(p.relative_to(ROOT)), p.read_text()) for p in paths]


def readme_python_snippets() -> list[str]:
    """The `python -c "..."` lines of the documents' ```bash blocks (steps a reader runs before a command)."""
    import re

    return [line.strip() for _, text in documents() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
            for line in block.splitlines() if line.strip().startswith("python -c ")]


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every snakemake command in the README and in the presets' headers, verbatim.

    README: lines of ```bash blocks and `inline code` that start with `snakemake` or `.venv/bin/snakemake`
    (a trailing `# comment` dropped, `\\` continuations joined). Presets: header comment lines `#   snakemake ...`.
    """
    import re

    found = []
    for where, text in documents():
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if re.match(r"(\.venv/bin/)?snakemake\s", line):
                    found.append((where, " ".join(line.split())))
        for span in re.findall(r"`((?:\.venv/bin/)?snakemake\s[^`]+)`", text):
            found.append((where, " ".join(span.split())))
    for preset in sorted((ROOT / "presets").glob("*.yaml")):
        header = []
        for line in preset.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#").strip())
        joined = "\n".join(header).replace("\\\n", " ")
        for line in joined.splitlines():
            if line.startswith("snakemake "):
                found.append((f"presets/{preset.name}", " ".join(line.split())))
    return list(dict.fromkeys(found))
