rule discover_images:
    output:
        "results/discover/{folder}/{chunk}.json",
    params:
        images=chunk_images,
    log:
        "logs/discover_images/{folder}/{chunk}.log",
    localrule: True
    run:
        steps.write_manifest(params.images, output[0], log[0])
