# The experiment plan (pag.pipeline.plan) that all rules read: jobs, commands, inputs, values.
import shutil
from pathlib import Path

from snakemake.utils import validate

from pag.pipeline import dvcyaml
from pag.pipeline import plan as layout
from pag.pipeline.plan import load_plan

validate(config, "../schemas/config.schema.yaml")

PLAN = load_plan(config["profile"])
PROFILE = PLAN.profile
NAME = PLAN.name
RESOURCES = PROFILE.resources
RUN_NAMES = [run.name for run in PLAN.runs()]
SUMMARY_FILES = PLAN.job("summarize").results
REPORT_FILES = PLAN.job("report").results
CLASSICAL = any(job.name == "classical" for job in PLAN.jobs)


def plan_field(kind, field):
    """A function of a job's wildcards giving `field` of the plan's job (`kind-<run>`)."""

    def lookup(wildcards):
        name = f"{kind}-{wildcards.run}" if "run" in wildcards.keys() else kind
        return getattr(PLAN.job(name), field)

    return lookup


def sync_dvc():
    """Record the outputs in dvc.lock, so `dvc status` agrees that everything is up to date."""
    if shutil.which("dvc") is None:
        logger.info("dvc is not installed: dvc.lock not updated")
        return
    logger.info(dvcyaml.commit(PLAN))


def caption_of(path):
    """The caption of a report figure: its family's (ponder_maps_pag -> ponder_maps)."""
    stem = Path(path).stem
    for family in ("ponder_maps", "qualitative"):
        if stem.startswith(family):
            return family
    return stem


def in_report(path):
    """A report output as the Snakemake report shows it: figures in one category per family
    (ponder maps of every method together), the Markdown tables together; the rest as is.
    """
    if path.endswith(".png"):
        family = caption_of(path)
        category = family.replace("_", " ").capitalize()
        return report(path, category=category, caption=f"../report/{family}.rst")
    if path.endswith(".md") and not path.endswith("README.md"):
        return report(path, category="Tables", caption="../report/tables.rst")
    return path
