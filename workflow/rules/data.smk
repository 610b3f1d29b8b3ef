# The embedded testbed: generated prompts with exact gold answers, split without overlap.


rule prepare_data:
    output:
        splits=expand(f"{R}/data/{{split}}.jsonl", split=ALL_SPLITS),
    params:
        testbed=config["testbed"],
        hf_data=config.get("hf_data"),
        seed=config["seed"],
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/rules/prepare_data.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/prepare_data.py"
