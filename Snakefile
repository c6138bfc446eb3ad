# The pipeline's Snakemake front-end. The jobs come from the experiment plan
# (pag.pipeline.plan), the same plan `pag dvc-yaml` writes as dvc.yaml, so both front-ends run
# the same `pag` commands on the same files.
#
#   snakemake --cores 2                        # the default profile, params/synthetic.yaml
#   snakemake --cores 2 --config profile=tiny  # another profile, params/<name>.yaml
#   snakemake --profile workflow/profiles/slurm --config profile=nyuv2   # on a SLURM cluster
from snakemake.utils import min_version

min_version("9.0")


configfile: "workflow/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    run="|".join(RUN_NAMES),


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        summary=SUMMARY_FILES,
        trivial=PLAN.job("trivial").results,
        figures=REPORT_FILES,


# MLflow: one parent run per invocation, every train and evaluate job a child (pag.tracking)
onstart:
    from pag import tracking

    tracking.begin_pipeline(NAME, "snakemake")


onsuccess:
    sync_dvc()
    from pag import tracking

    tracking.end_pipeline(ok=True)


onerror:
    from pag import tracking

    tracking.end_pipeline(ok=False)
