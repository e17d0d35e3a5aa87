# distdyn: distillation dynamics of Vision Transformers (Tian, Xu, Li; AAAI 2026).
# config -> training -> checkpoints -> HDF5 dumps -> metric tables -> figures, claims -> report.
# config.yaml is the embedded default experiment, read only when no --configfile is given: a preset
# is the whole experiment (Snakemake would otherwise merge it into config.yaml key by key, and every key
# the preset leaves out would come from the toy default).
import sys

sys.path.insert(0, f"{workflow.basedir}/workflow")
from distdyn.errors import yaml_problem  # noqa: E402

if not workflow.overwrite_configfiles:
    # One line naming the file and line, where Snakemake's own message names neither.
    if problem := yaml_problem("config.yaml"):
        print(f"error: config.yaml: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(1)

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/claims.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        final_targets(),
