FIGURES = [
    "teacher_entropy",
    "teacher_intensity",
    "teacher_spectra",
    "teacher_magnitudes",
    "entropy_profiles",
    "accuracy",
    "accuracy_curves",
    "encoding",
]
FIGURE_CATEGORY = {
    "teacher_entropy": "1. Teacher",
    "teacher_intensity": "1. Teacher",
    "teacher_spectra": "1. Teacher",
    "teacher_magnitudes": "1. Teacher",
    "entropy_profiles": "2. Students",
    "accuracy": "3. Accuracy",
    "accuracy_curves": "3. Accuracy",
    "encoding": "2. Students",
}


rule plot:
    input:
        code=code("plots"),
        tables=expand(
            "results/metrics/{t}.csv",
            t=["layers", "spectra", "accuracy", "accuracy_summary", "curves", "cka", "encoding"],
        ),
    output:
        [figure(f, FIGURE_CATEGORY[f], f) for f in FIGURES],
        [
            report(
                f"results/figures/entropy_heatmap_{s}.png",
                caption="../report/entropy_heatmap.rst",
                category="2. Students",
                subcategory="Entropy heatmaps",
                labels={"setting": s},
            )
            for s in SETTINGS
        ],
        [
            report(
                f"results/figures/cka_{s}.png",
                caption="../report/cka.rst",
                category="2. Students",
                subcategory="CKA with the teacher",
                labels={"setting": s},
            )
            for s in SETTINGS
        ],
    params:
        settings=" ".join(SETTINGS),
    conda:
        ENV
    log:
        "results/logs/plot.log",
    shell:
        "python -m distdyn.plots --metrics results/metrics --out results/figures --settings {params.settings} > {log} 2>&1"
