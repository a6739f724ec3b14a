rule aggregate_folder:
    input:
        folder_chunks,
    output:
        f"{FOLDERS_DIR}/{{folder}}.json",
    log:
        f"logs/aggregate_folder/{MODEL}/{{folder}}.log",
    localrule: True
    params:
        num_concepts=config["num_concepts"],
    run:
        steps.aggregate_folder(input, output[0], log[0], params.num_concepts)


rule aggregate_concepts:
    input:
        all_folders,
    output:
        config["output"],
    log:
        "logs/aggregate_concepts/aggregate.log",
    localrule: True
    conda:
        "../../envs/concepts.yaml"
    params:
        model=MODEL,
        num_concepts=config["num_concepts"],
        skipped=skipped_counts,
    script:
        "../../scripts/aggregate_concepts.py"
