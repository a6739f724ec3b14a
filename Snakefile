import os

from snakemake.utils import min_version

min_version("9.0")


# A deployment keeps its own config/config.yaml in the working directory. Where
# there is none, the defaults shipped with the workflow apply.
CONFIG_FILE = "config/config.yaml"
if not os.path.exists(CONFIG_FILE):
    CONFIG_FILE = os.path.join(workflow.basedir, CONFIG_FILE)


configfile: CONFIG_FILE


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/discover.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        config["output"],
