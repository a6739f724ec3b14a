from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/discover.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        config["output"],
