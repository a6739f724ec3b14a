rule classify:
    input:
        images="results/validate/{folder}/{chunk}.json",
        model=MODEL_PATH,
    output:
        f"{CLASSIFY_DIR}/{{folder}}/{{chunk}}.npz",
    log:
        f"logs/classify/{MODEL}/{{folder}}/{{chunk}}.log",
    conda:
        classify_conda_env()
    threads: classify_resource("threads")
    resources:
        mem_mb=classify_resource("mem_mb"),
        runtime=classify_resource("runtime"),
        gpu=classify_resource("gpu"),
    params:
        model=MODEL,
    script:
        "../../scripts/classify.py"
