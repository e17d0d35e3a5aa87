rule cka:
    input:
        student=expand("results/activations/{{setting}}/seed_{{seed}}/{ckpt}.h5", ckpt=STUDENT_CKPTS),
        teacher="results/activations/teacher.h5",
    output:
        "results/metrics/runs/{setting}/seed_{seed}/cka.csv",
    log:
        "results/logs/cka/{setting}_seed_{seed}.log",
    conda:
        ENV
    threads: config["metrics"]["threads"]
    resources:
        mem_mb=RES["metrics_mem_mb"],
    params:
        code=code_fingerprint("distdyn.analysis"),
        expect=lambda w: as_json(student_identities(w.setting, w.seed) + [model_identity("teacher")]),
    shell:
        "python -m distdyn.analysis cka --student {input.student} --teacher {input.teacher} --out {output} "
        "--expect {params.expect:q} --threads {threads} > {log} 2>&1"


rule gather_cka:
    input:
        tables=[f"results/metrics/runs/{s}/seed_{seed}/cka.csv" for s, seed in student_runs()],
    output:
        "results/metrics/cka.csv",
    log:
        "results/logs/gather_cka.log",
    conda:
        ENV
    params:
        code=code_fingerprint("distdyn.metrics"),
        expect=cka_expect(),
    shell:
        "python -m distdyn.metrics gather --tables {input.tables} --expect {params.expect:q} --out {output} > {log} 2>&1"


rule phases:
    input:
        layers="results/metrics/layers.csv",
    output:
        "results/metrics/phases.csv",
    log:
        "results/logs/phases.log",
    conda:
        ENV
    params:
        code=code_fingerprint("distdyn.analysis"),
    shell:
        "python -m distdyn.analysis phases --layers {input.layers} --out {output} > {log} 2>&1"


rule encoding:
    input:
        dumps=[f"results/activations/{m}.h5" for m in MODELS]
        + [f"results/activations/{s}/seed_{seed}/final.h5" for s, seed in student_runs()],
    output:
        "results/metrics/encoding.csv",
    log:
        "results/logs/encoding.log",
    conda:
        ENV
    threads: config["metrics"]["threads"]
    resources:
        mem_mb=RES["metrics_mem_mb"],
    params:
        code=code_fingerprint("distdyn.analysis"),
        permutations=config["analysis"]["permutations"],
        expect=as_json(
            [model_identity(m) for m in MODELS] + [student_identities(s, seed)[-1] for s, seed in student_runs()]
        ),
    shell:
        "python -m distdyn.analysis encoding {input.dumps} --permutations {params.permutations} "
        "--expect {params.expect:q} --out {output} --threads {threads} > {log} 2>&1"
