# Fetching needs internet, which cluster jobs often lack: it runs on the submitting machine.
localrules:
    fetch_weights,


rule fetch_weights:
    output:
        "results/models/{fetched}/weights.pt",
    params:
        code=code_fingerprint("distdyn.models"),
        source=lambda w: weights_source(w.fetched),
        shape=f"--num-classes {DATA_INFO.num_classes} --in-chans {DATA_INFO.in_chans}",
    conda:
        ENV
    log:
        "results/logs/fetch_weights/{fetched}.log",
    shell:
        "python -m distdyn.models fetch {params.source} {params.shape} --out {output} > {log} 2>&1"


rule pretrain_teacher:
    input:
        checkpoint=[TEACHER_SPEC["checkpoint"]] if TEACHER_SPEC["checkpoint"] else [],
    output:
        final="results/teacher/final.pt",
        log="results/teacher/log.jsonl",
        epochs=expand("results/teacher/epoch_{e}.pt", e=TEACHER_EPOCHS),
    params:
        code=code_fingerprint("distdyn.train"),
        spec=as_json(TEACHER_SPEC),
        launch=launcher(config["teacher"]["train"]),
    conda:
        ENV
    log:
        "results/logs/pretrain_teacher.log",
    benchmark:
        "results/benchmarks/pretrain_teacher.tsv"
    threads: config["teacher"]["train"]["threads"]
    resources:
        gpu=gpus(config["teacher"]["train"]),
        mem_mb=RES["train_mem_mb"],
        runtime=RES["train_runtime"],
    shell:
        "{params.launch} distdyn.train --spec {params.spec:q} --out results/teacher "
        "--resume results/.resume/teacher.pt --gpu {resources.gpu} --threads {threads} > {log} 2>&1"


rule distill_student:
    input:
        teacher=lambda w: "results/teacher/final.pt" if needs_teacher(w.setting) else [],
    output:
        final="results/students/{setting}/seed_{seed}/final.pt",
        log="results/students/{setting}/seed_{seed}/log.jsonl",
        epochs=expand("results/students/{{setting}}/seed_{{seed}}/{ckpt}.pt", ckpt=STUDENT_CKPTS[:-1]),
    params:
        code=code_fingerprint("distdyn.train"),
        spec=lambda w: as_json(STUDENT_SPECS[(w.setting, int(w.seed))]),
        teacher=lambda w, input: f"--teacher {input.teacher}" if input.teacher else "",
        launch=launcher(config["student"]["train"]),
    conda:
        ENV
    log:
        "results/logs/distill_student/{setting}_seed_{seed}.log",
    benchmark:
        "results/benchmarks/distill_student/{setting}_seed_{seed}.tsv"
    threads: config["student"]["train"]["threads"]
    resources:
        gpu=gpus(config["student"]["train"]),
        mem_mb=RES["train_mem_mb"],
        runtime=RES["train_runtime"],
    shell:
        "{params.launch} distdyn.train --spec {params.spec:q} --out results/students/{wildcards.setting}/seed_{wildcards.seed} "
        "{params.teacher} --resume results/.resume/students/{wildcards.setting}_seed_{wildcards.seed}.pt "
        "--gpu {resources.gpu} --threads {threads} > {log} 2>&1"
