# The published claims (METHODS.md) tested on our runs (config block `claims`): one row per claim
# with its paired 95% CI over seeds, minimum detectable difference and verdict. An experiment the
# config does not run (routing simulation, bsr_eval, r2m, noisy methods) leaves its claim
# inconclusive, with a note. With claims.best_single absent or `auto`, claims 1 and 10 take as best
# single RM the single-RM method of claims.routed's recipe best on the validation split.


rule claims:
    input:
        unpack(claims_inputs),
    output:
        table=report(f"{R}/tables/claims.tsv", caption="../report/claims.rst", category="Claims", subcategory="Verdicts"),
        markdown=f"{R}/tables/claims.md",
        values=report(f"{R}/tables/claims_values.tsv", caption="../report/claims_values.rst", category="Claims",
                      subcategory="Verdicts"),
        latex=f"{R}/tables/claims.tex",
    params:
        roles=CLAIMS,
        methods=list(METHODS),
        benchmarks=claims_benchmarks(),
        best_single_candidates=claims_best_single_candidates(),
        run_name=config["run_name"],
    log:
        f"{R}/logs/claims.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/claims_table.py"
