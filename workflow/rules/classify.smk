rule classify:
    input:
        images="results/validate/{folder}/{chunk}.json",
        model=MODEL_PATH,
    output:
        f"{CLASSIFY_DIR}/{{folder}}/{{chunk}}.npz",
    params:
        model=MODEL,
    log:
        f"logs/classify/{MODEL}/{{folder}}/{{chunk}}.log",
    threads: classify_resource("threads")
    resources:
        mem_mb=classify_resource("mem_mb"),
        runtime=classify_resource("runtime"),
        gpu=classify_resource("gpu"),
    script:
        "../../scripts/classify.py"
