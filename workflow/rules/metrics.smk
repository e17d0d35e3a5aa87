METRIC_OPTS = (
    f"--entropy-range {config['metrics']['entropy_range']} --bins {config['metrics']['bins']} "
    f"--chunk-images {config['metrics']['chunk_images']} --bootstrap {config['metrics']['bootstrap']} "
    f"--ci {config['metrics']['ci']} --outlier-multiple {config['metrics']['outlier_multiple']}"
)
METRIC_SHELL = (
    "DISTDYN_KERNELS=$(cat {input.kernels}) "  # the library build_kernels made (or `torch`): never a compile
    "python -m distdyn.slots {resources.gpu} -- "  # its own GPUs (distdyn.slots)
    "python -m distdyn.metrics {input.dumps} --out {params.out} {params.opts} --expect {params.expect:q} "
    "--entropy-wide {output.entropy} --threads {threads} --gpu {resources.gpu} > {log} 2>&1"
)
METRIC_GPU = RES["gpu"] if config["metrics"]["gpu"] else 0
KERNELS = "results/kernels/library.txt"  # what the metric jobs load: the built library's path, or `torch`


# The metric kernel is built once, before any metric job (those load it and never compile): into
# results/kernels under the hash of its source, on the submitting machine under SLURM.
localrules:
    build_kernels,


rule build_kernels:
    output:
        KERNELS,
    log:
        "results/logs/build_kernels.log",
    conda:
        ENV
    params:
        code=code_fingerprint("distdyn.kernels"),
        cache=lambda w, output: os.path.dirname(output[0]),
    shell:
        "DISTDYN_CACHE={params.cache} python -m distdyn.kernels --out {output} > {log} 2>&1"


rule compute_model_metrics:
    input:
        dumps="results/activations/{model}.h5",
        kernels=KERNELS,
    output:
        layers="results/metrics/runs/{model}/layers.csv",
        spectra="results/metrics/runs/{model}/spectra.csv",
        entropy="results/metrics/entropy_{model}.csv",
    log:
        "results/logs/compute_metrics/{model}.log",
    benchmark:
        "results/benchmarks/compute_metrics/{model}.tsv"
    conda:
        ENV
    threads: config["metrics"]["threads"]
    resources:
        mem_mb=RES["metrics_mem_mb"],
        gpu=METRIC_GPU,
    params:
        code=code_fingerprint("distdyn.metrics"),
        out=lambda w, output: os.path.dirname(output.layers),
        opts=METRIC_OPTS,
        expect=lambda w: as_json([model_identity(w.model)]),
    shell:
        METRIC_SHELL


rule compute_metrics:
    input:
        dumps=expand("results/activations/{{setting}}/seed_{{seed}}/{ckpt}.h5", ckpt=STUDENT_CKPTS),
        kernels=KERNELS,
    output:
        layers="results/metrics/runs/{setting}/seed_{seed}/layers.csv",
        spectra="results/metrics/runs/{setting}/seed_{seed}/spectra.csv",
        entropy="results/metrics/entropy_{setting}_seed_{seed}.csv",
    log:
        "results/logs/compute_metrics/{setting}_seed_{seed}.log",
    benchmark:
        "results/benchmarks/compute_metrics/{setting}_seed_{seed}.tsv"
    conda:
        ENV
    threads: config["metrics"]["threads"]
    resources:
        mem_mb=RES["metrics_mem_mb"],
        gpu=METRIC_GPU,
    params:
        code=code_fingerprint("distdyn.metrics"),
        out=lambda w, output: os.path.dirname(output.layers),
        opts=METRIC_OPTS,
        expect=lambda w: as_json(student_identities(w.setting, w.seed)),
    shell:
        METRIC_SHELL


rule gather_metrics:
    input:
        layers=run_tables("layers.csv"),
        spectra=run_tables("spectra.csv"),
    output:
        layers="results/metrics/layers.csv",
        spectra="results/metrics/spectra.csv",
    log:
        "results/logs/gather_metrics.log",
    conda:
        ENV
    params:
        code=code_fingerprint("distdyn.metrics"),
        layers=run_table_expect("layers.csv"),
        spectra=run_table_expect("spectra.csv"),
    shell:
        "(python -m distdyn.metrics gather --tables {input.layers} --expect {params.layers:q} --out {output.layers} && "
        "python -m distdyn.metrics gather --tables {input.spectra} --expect {params.spectra:q} --out {output.spectra}"
        ") > {log} 2>&1"


rule accuracy_tables:
    input:
        logs=["results/teacher/log.jsonl"] + [f"{run_dir(s, seed)}/log.jsonl" for s, seed in student_runs()],
        finals=["results/teacher/final.pt"] + [f"{run_dir(s, seed)}/final.pt" for s, seed in student_runs()],
    output:
        accuracy="results/metrics/accuracy.csv",
        summary="results/metrics/accuracy_summary.csv",
        curves="results/metrics/curves.csv",
        correct="results/metrics/val_correct.npz",
    log:
        "results/logs/accuracy_tables.log",
    conda:
        ENV
    params:
        code=code_fingerprint("distdyn.metrics"),
        names=" ".join(["teacher"] + [s for s, _ in student_runs()]),
        seeds=" ".join(str(x) for x in [config["teacher"]["seed"]] + [seed for _, seed in student_runs()]),
        roles=" ".join(["teacher"] + ["student"] * len(student_runs())),
    shell:
        "python -m distdyn.metrics accuracy --logs {input.logs} --names {params.names} --seeds {params.seeds} "
        "--roles {params.roles} --out {output.accuracy} --summary {output.summary} --curves {output.curves} "
        "--finals {input.finals} --correct {output.correct} > {log} 2>&1"
