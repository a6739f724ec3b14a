rule discover_images:
    output:
        "results/discover/{folder}/{chunk}.json",
    log:
        "logs/discover_images/{folder}/{chunk}.log",
    localrule: True
    params:
        images=chunk_images,
    run:
        steps.write_manifest(params.images, output[0], log[0])
