rule select_probe:
    output:
        "results/teacher/probe_indices.csv",
    log:
        "results/logs/select_probe.log",
    conda:
        ENV
    params:
        code=code_fingerprint("distdyn.activations"),
        data=as_json(DATA_SPEC),
        probe=as_json(config["probe"]),
    shell:
        "python -m distdyn.activations probe --data {params.data:q} "
        '--data-root "$DISTDYN_DATA_ROOT" --num-workers $DISTDYN_NUM_WORKERS '
        "--probe {params.probe:q} --out {output} > {log} 2>&1"


DUMP_SHELL = (
    "python -m distdyn.slots {resources.gpu} -- "  # its own GPUs (distdyn.slots)
    "python -m distdyn.activations dump {input.checkpoints} --out {output} --model-names {params.names} "
    "--checkpoint-labels {params.checkpoints} "
    "--role {params.role} --setting {params.setting} --seed {params.seed} --data {params.data:q} "
    '--data-root "$DISTDYN_DATA_ROOT" --num-workers $DISTDYN_NUM_WORKERS '
    "--dump {params.dump:q} --probe-file {input.probe} --probe-mode {params.probe_mode} --gpu {resources.gpu} "
    "> {log} 2>&1"
)


rule dump_model_activations:
    input:
        checkpoints=model_weights,
        probe="results/teacher/probe_indices.csv",
    output:
        "results/activations/{model}.h5",
    log:
        "results/logs/dump_activations/{model}.log",
    benchmark:
        "results/benchmarks/dump_activations/{model}.tsv"
    conda:
        ENV
    resources:
        gpu=RES["gpu"],
        mem_mb=RES["dump_mem_mb"],
        runtime=within_limit(RES["dump_runtime"], RES),
    params:
        code=code_fingerprint("distdyn.activations"),
        names=lambda w: w.model,
        checkpoints="final",
        role=lambda w: model_role(w.model),
        setting=lambda w: w.model,
        seed=lambda w: config["teacher"]["seed"] if w.model == "teacher" else 0,
        data=as_json(DATA_SPEC),
        dump=as_json(config["dump"]),
        probe_mode=config["probe"]["mode"],
    shell:
        DUMP_SHELL


rule dump_activations:
    input:
        checkpoints=expand("results/students/{{setting}}/seed_{{seed}}/{ckpt}.pt", ckpt=STUDENT_CKPTS),
        probe="results/teacher/probe_indices.csv",
    output:
        expand("results/activations/{{setting}}/seed_{{seed}}/{ckpt}.h5", ckpt=STUDENT_CKPTS),
    log:
        "results/logs/dump_activations/{setting}_seed_{seed}.log",
    benchmark:
        "results/benchmarks/dump_activations/{setting}_seed_{seed}.tsv"
    conda:
        ENV
    resources:
        gpu=RES["gpu"],
        mem_mb=RES["dump_mem_mb"],
        runtime=within_limit(RES["dump_runtime"], RES),
    params:
        code=code_fingerprint("distdyn.activations"),
        names=lambda w: " ".join(f"{w.setting}/seed_{w.seed}/{c}" for c in STUDENT_CKPTS),
        checkpoints=" ".join(STUDENT_CKPTS),
        role="student",
        setting=lambda w: w.setting,
        seed=lambda w: w.seed,
        data=as_json(DATA_SPEC),
        dump=as_json(config["dump"]),
        probe_mode=config["probe"]["mode"],
    shell:
        DUMP_SHELL
