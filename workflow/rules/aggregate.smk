rule aggregate_folder:
    input:
        folder_chunks,
    output:
        f"{FOLDERS_DIR}/{{folder}}.json",
    params:
        num_concepts=config["num_concepts"],
    log:
        f"logs/aggregate_folder/{MODEL}/{{folder}}.log",
    localrule: True
    run:
        steps.aggregate_folder(input, output[0], log[0], params.num_concepts)


rule aggregate_concepts:
    input:
        all_folders,
    output:
        config["output"],
    params:
        model=MODEL,
        num_concepts=config["num_concepts"],
        skipped=skipped_counts,
    log:
        "logs/aggregate_concepts/aggregate.log",
    localrule: True
    script:
        "../../scripts/aggregate_concepts.py"
