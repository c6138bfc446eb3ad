# Aggregation and the paper's figures and tables.


rule trivial:
    input:
        PLAN.job("trivial").deps,
    output:
        PLAN.job("trivial").results,
    log:
        f"logs/{NAME}/trivial.log",
    conda:
        "../envs/pag.yaml"
    params:
        cmd=PLAN.job("trivial").cmd,
    shell:
        "{params.cmd} > {log} 2>&1"


# the classical edge detectors' floor, for profiles that list them (evaluation.classical)
if CLASSICAL:

    rule classical:
        input:
            PLAN.job("classical").deps,
        output:
            PLAN.job("classical").results,
        log:
            f"logs/{NAME}/classical.log",
        conda:
            "../envs/pag.yaml"
        threads: PLAN.job("classical").threads
        params:
            cmd=PLAN.job("classical").cmd,
            values=PLAN.job("classical").values,
        shell:
            "{params.cmd} > {log} 2>&1"


rule summarize:
    input:
        PLAN.job("summarize").deps,
    output:
        [
            (
                report(path, category="Tables", caption="../report/summary.rst")
                if path.endswith("summary.csv")
                else path
            )
            for path in SUMMARY_FILES
        ],
    log:
        f"logs/{NAME}/summarize.log",
    conda:
        "../envs/pag.yaml"
    params:
        cmd=PLAN.job("summarize").cmd,
    shell:
        "{params.cmd} > {log} 2>&1"


rule report:
    input:
        PLAN.job("report").deps,
    output:
        [in_report(path) for path in REPORT_FILES],
    log:
        f"logs/{NAME}/report.log",
    conda:
        "../envs/pag.yaml"
    params:
        cmd=PLAN.job("report").cmd,
    shell:
        "{params.cmd} > {log} 2>&1"
