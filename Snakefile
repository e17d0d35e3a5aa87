# distdyn: distillation dynamics of Vision Transformers (Tian, Xu, Li; AAAI 2026).
# config -> training -> checkpoints -> HDF5 dumps -> metric tables -> figures, claims -> report.
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
    input:
        final_targets(),
    default_target: True
