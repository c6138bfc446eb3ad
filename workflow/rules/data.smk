# The dataset: rendered (synthetic profiles) or fetched and checked (real datasets).


rule data:
    output:
        directory(layout.dataset_path(PROFILE)),
    log:
        f"logs/{NAME}/data.log",
    conda:
        "../envs/pag.yaml"
    threads: RESOURCES.threads
    params:
        cmd=PLAN.job("data").cmd,
    shell:
        "{params.cmd} > {log} 2>&1"


if PROFILE.pretrained:

    rule weights:
        output:
            layout.weights_path(PROFILE),
        log:
            f"logs/{NAME}/weights.log",
        conda:
            "../envs/pag.yaml"
        params:
            cmd=PLAN.job("weights").cmd,
        shell:
            "{params.cmd} > {log} 2>&1"
