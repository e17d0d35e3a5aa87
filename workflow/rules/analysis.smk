rule cka:
    input:
        code=code("activations", "metrics", "analysis"),
        student=expand("results/activations/{{setting}}/seed_{{seed}}/{ckpt}.h5", ckpt=STUDENT_CKPTS),
        teacher="results/activations/teacher.h5",
    output:
        "results/metrics/runs/{setting}/seed_{seed}/cka.csv",
    conda:
        ENV
    log:
        "results/logs/cka/{setting}_seed_{seed}.log",
    shell:
        "python -m distdyn.analysis cka --student {input.student} --teacher {input.teacher} --out {output} > {log} 2>&1"


rule gather_cka:
    input:
        code=code("metrics"),
        tables=[f"results/metrics/runs/{s}/seed_{seed}/cka.csv" for s, seed in student_runs()],
    output:
        "results/metrics/cka.csv",
    conda:
        ENV
    log:
        "results/logs/gather_cka.log",
    shell:
        "python -m distdyn.metrics gather --tables {input.tables} --out {output} > {log} 2>&1"


rule phases:
    input:
        code=code("metrics", "analysis"),
        layers="results/metrics/layers.csv",
    output:
        "results/metrics/phases.csv",
    conda:
        ENV
    log:
        "results/logs/phases.log",
    shell:
        "python -m distdyn.analysis phases --layers {input.layers} --out {output} > {log} 2>&1"


rule encoding:
    input:
        code=code("activations", "metrics", "analysis"),
        dumps=["results/activations/teacher.h5"]
        + [f"results/activations/{s}/seed_{seed}/final.h5" for s, seed in student_runs()],
    output:
        "results/metrics/encoding.csv",
    params:
        permutations=config["analysis"]["permutations"],
    conda:
        ENV
    log:
        "results/logs/encoding.log",
    shell:
        "python -m distdyn.analysis encoding {input.dumps} --permutations {params.permutations} "
        "--out {output} > {log} 2>&1"
