# Fetching needs internet, which cluster jobs often lack: it runs on the submitting machine.
localrules:
    fetch_weights,


rule fetch_weights:
    input:
        weights=lambda w: weights_file(w.fetched),
    output:
        "results/models/{fetched}/weights.pt",
    log:
        "results/logs/fetch_weights/{fetched}.log",
    conda:
        ENV
    params:
        code=code_fingerprint("distdyn.models"),
        source=lambda w: weights_source(w.fetched),
        shape=f"--num-classes {DATA_INFO.num_classes} --in-chans {DATA_INFO.in_chans}",
    shell:
        "python -m distdyn.models fetch {params.source} {params.shape} --out {output} > {log} 2>&1"


rule pretrain_teacher:
    input:
        checkpoint=[TEACHER_SPEC["checkpoint"]] if TEACHER_SPEC["checkpoint"] else [],
    output:
        final="results/teacher/final.pt",
        log="results/teacher/log.jsonl",
        epochs=expand("results/teacher/epoch_{e}.pt", e=TEACHER_EPOCHS),
    log:
        "results/logs/pretrain_teacher.log",
    benchmark:
        "results/benchmarks/pretrain_teacher.tsv"
    conda:
        ENV
    threads: config["teacher"]["train"]["threads"]
    resources:
        gpu=gpus(config["teacher"]["train"]),
        mem_mb=RES["train_mem_mb"],
        runtime=RES["train_runtime"],
    params:
        code=code_fingerprint("distdyn.train"),
        spec=as_json(TEACHER_SPEC),
        launch=launcher(config["teacher"]["train"]),
        out=lambda w, output: os.path.dirname(output.final),
        resume="results/.resume/teacher.pt",
    shell:
        "{params.launch} distdyn.train --spec {params.spec:q} --out {params.out} "
        "--resume {params.resume} --code {params.code:q} --gpu {resources.gpu} --threads {threads} "
        '--data-root "$DISTDYN_DATA_ROOT" --num-workers $DISTDYN_NUM_WORKERS > {log} 2>&1'


rule distill_group:
    input:
        teacher="results/teacher/final.pt",
    output:
        # (a placeholder no job asks for when no students share the teacher)
        ready=[ready_file(s) for s in SHARED_SETTINGS] or ["results/students/shared/seed_{seed}/none"],
    log:
        "results/logs/distill_group/seed_{seed}.log",
    benchmark:
        "results/benchmarks/distill_group/seed_{seed}.tsv"
    conda:
        ENV
    threads: config["student"]["train"]["threads"]
    resources:
        gpu=gpus(config["student"]["train"]),
        mem_mb=GROUP_MEM_MB,
        runtime=GROUP_RUNTIME,
    params:
        code=code_fingerprint("distdyn.train"),
        members=lambda w: as_json(group_members(w.seed)),
        store=STUDENT_STORE,
        launch=launcher(config["student"]["train"]),
    shell:
        "{params.launch} distdyn.train --group {params.members:q} --teacher {input.teacher} "
        "--store {params.store} --code {params.code:q} --gpu {resources.gpu} --threads {threads} "
        '--data-root "$DISTDYN_DATA_ROOT" --num-workers $DISTDYN_NUM_WORKERS > {log} 2>&1'


rule distill_student:
    input:
        teacher=lambda w: "results/teacher/final.pt" if setting_needs_teacher(w.setting) else [],
        ready=lambda w: ancient(ready_file(w.setting, w.seed)) if w.setting in SHARED_SETTINGS else [],
    output:
        final="results/students/{setting}/seed_{seed}/final.pt",
        log="results/students/{setting}/seed_{seed}/log.jsonl",
        epochs=expand("results/students/{{setting}}/seed_{{seed}}/{ckpt}.pt", ckpt=STUDENT_CKPTS[:-1]),
    log:
        "results/logs/distill_student/{setting}_seed_{seed}.log",
    benchmark:
        "results/benchmarks/distill_student/{setting}_seed_{seed}.tsv"
    conda:
        ENV
    threads: config["student"]["train"]["threads"]
    resources:
        gpu=gpus(config["student"]["train"]),
        mem_mb=RES["train_mem_mb"],
        runtime=RES["train_runtime"],
    params:
        code=lambda w: with_method(code_fingerprint("distdyn.train"), w.setting),
        spec=lambda w: as_json(STUDENT_SPECS[(w.setting, int(w.seed))]),
        entry=lambda w: student_entry(w.setting, w.seed),
        teacher=lambda w, input: f"--teacher {input.teacher}" if input.teacher else "",
        out=lambda w, output: os.path.dirname(output.final),
        resume=lambda w: student_resume(w.setting, w.seed),
        launch=launcher(config["student"]["train"]),
    shell:
        "python -m distdyn.store restore {params.entry} --out {params.out} {params.teacher} --threads {threads} "
        "--gpu {resources.gpu} -- {params.launch} distdyn.train --spec {params.spec:q} --out {params.out} "
        "{params.teacher} --resume {params.resume} --code {params.code:q} --gpu {resources.gpu} --threads {threads} "
        '--data-root "$DISTDYN_DATA_ROOT" --num-workers $DISTDYN_NUM_WORKERS > {log} 2>&1'
