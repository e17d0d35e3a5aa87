# Quick start: `make run` (the default study) and `make test` (the test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= 2
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install run test report dry-run lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,slurm,lint]'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(SNAKEMAKE) --cores $(CORES)
	@# The report is rebuilt only when some output is newer than it.
	@if [ ! -f results/report.html ] || [ -n "$$(find results -newer results/report.html -type f -not -path 'results/.resume/*' -print -quit)" ]; then \
		$(SNAKEMAKE) --report results/report.html; \
	else echo "report up to date: results/report.html"; fi

report: $(VENV)/.installed
	$(SNAKEMAKE) --report results/report.html

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

dry-run: $(VENV)/.installed
	$(SNAKEMAKE) -n --cores $(CORES)

# Python (ruff), the rule files' formatting (snakefmt) and Snakemake's own workflow lints.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	$(SNAKEMAKE) --lint

clean:
	rm -rf results/* results/.resume .snakemake
	touch results/.gitkeep
