rule claims:
    input:
        layers="results/metrics/layers.csv",
        accuracy="results/metrics/accuracy.csv",
        curves="results/metrics/curves.csv",
        correct="results/metrics/val_correct.npz",
        cka="results/metrics/cka.csv",
    output:
        md=report("results/claims.md", caption="../report/claims.rst", category="4. Claims"),
        json="results/claims.json",
    log:
        "results/logs/claims.log",
    conda:
        ENV
    params:
        code=code_fingerprint("distdyn.claims"),
        settings=as_json(
            {
                n: {"method": s["method"], "pairs": s["pairs"]}
                for n, s in ((k[0], v["setting"]) for k, v in STUDENT_SPECS.items())
            }
        ),
        depths=f"--student-depth {_SHAPES['student'][0]} --teacher-depth {_SHAPES['teacher'][0]}",
        options=claims_options(),
    shell:
        "python -m distdyn.claims --layers {input.layers} --accuracy {input.accuracy} --curves {input.curves} "
        "--correct {input.correct} --cka {input.cka} --settings-json {params.settings:q} {params.depths} "
        "{params.options} --out {output.md} "
        "--json {output.json} > {log} 2>&1"
