# Training: the dense baseline per seed, then every method at every budget and seed, each
# fine-tuned from the dense weights of its seed. `values` are the run's resolved params: a
# change to them (and only to them) reruns the run.


rule train:
    input:
        plan_field("train", "deps"),
    output:
        checkpoint=layout.final_checkpoint(PROFILE, "{run}"),
        metrics=layout.train_metrics(PROFILE, "{run}"),
    log:
        f"logs/{NAME}/train/{{run}}.log",
    conda:
        "../envs/pag.yaml"
    threads: RESOURCES.threads
    resources:
        mem_mb=RESOURCES.mem_mb,
        runtime=RESOURCES.runtime_min,
        gpu=RESOURCES.gpus,
    params:
        cmd=plan_field("train", "cmd"),
        values=plan_field("train", "values"),
    shell:
        "{params.cmd} > {log} 2>&1"
