# Models are prepared once, on the host that runs Snakemake, because compute
# nodes often have no internet access. Classify jobs only read this copy.


rule download_googlenet:
    output:
        directory("resources/googlenet"),
    log:
        "logs/download_googlenet/download.log",
    localrule: True
    conda:
        "../../envs/concepts.yaml"
    params:
        handle=config["googlenet_handle"],
    script:
        "../../scripts/download_googlenet.py"


rule convert_efficientnet:
    output:
        "resources/efficientnet_lite0.keras",
    log:
        "logs/convert_efficientnet/convert.log",
    localrule: True
    conda:
        "../../envs/concepts.yaml"
    script:
        "../../scripts/convert_efficientnet.py"
