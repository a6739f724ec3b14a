rule validate_images:
    input:
        "results/discover/{folder}/{chunk}.json",
    output:
        "results/validate/{folder}/{chunk}.json",
    log:
        "logs/validate_images/{folder}/{chunk}.log",
    localrule: True
    params:
        non_rgb=config["non_rgb"],
        max_pixels=config["max_pixels"],
    run:
        steps.validate_chunk(
            input[0],
            config["input_dir"],
            output[0],
            log[0],
            non_rgb=params.non_rgb,
            max_pixels=params.max_pixels,
        )
