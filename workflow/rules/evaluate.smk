# Evaluation of every run on the profile's split: metrics (committed) and saved predictions.


rule evaluate:
    input:
        plan_field("eval", "deps"),
    output:
        metrics=layout.eval_metrics(PROFILE, "{run}"),
        samples=layout.eval_samples(PROFILE, "{run}"),
    log:
        f"logs/{NAME}/evaluate/{{run}}.log",
    conda:
        "../envs/pag.yaml"
    threads: RESOURCES.threads
    resources:
        mem_mb=RESOURCES.mem_mb,
        gpu=RESOURCES.gpus,
    params:
        cmd=plan_field("eval", "cmd"),
        values=plan_field("eval", "values"),
    shell:
        "{params.cmd} > {log} 2>&1"
