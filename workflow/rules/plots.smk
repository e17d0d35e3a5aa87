# Per analysed model (the teacher of a study, each extra model): {model}_{kind}.png.
MODEL_FIGURES = ["entropy", "intensity", "spectra", "magnitudes", "outliers"]
STUDY_FIGURES = {
    "entropy_profiles": "2. Students",
    "encoding": "2. Students",
    **({"accuracy": "3. Accuracy", "accuracy_curves": "3. Accuracy"} if SETTINGS else {}),
}
FIGURES = [f"{m}_{k}" for m in MODELS for k in MODEL_FIGURES] + list(STUDY_FIGURES)


rule plot:
    input:
        tables=expand(
            "results/metrics/{t}.csv",
            t=["layers", "spectra", "encoding"]
            + (["accuracy", "accuracy_summary", "curves", "cka"] if SETTINGS else []),
        ),
    output:
        [model_figure(m, k) for m in MODELS for k in MODEL_FIGURES],
        [figure(f, c, f) for f, c in STUDY_FIGURES.items()],
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
    log:
        "results/logs/plot.log",
    conda:
        ENV
    params:
        code=code_fingerprint("distdyn.plots"),
        names=f"--settings {' '.join(SETTINGS)} --models {' '.join(MODELS)}",
        metrics=lambda w, input: os.path.dirname(input.tables[0]),
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "python -m distdyn.plots --metrics {params.metrics} --out {params.out} {params.names} > {log} 2>&1"
