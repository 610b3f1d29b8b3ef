"""The claims pooled over testbed instances: each instance is one run of the claims config with
its own `seed` (data, SFT policy and RMs) in its own results directory; this reads their
`tables/claims.tsv` and `tables/claims_values.tsv` and writes the pooled verdicts beside every
instance's own (`make claims` calls it after the instances' runs).

    python -m rmroute.claims_pool --out results/claims results/claims/instance0 results/claims/instance1 ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from rmroute.claims import claims_latex, claims_markdown, instances_markdown, pool_instances
from rmroute.io import write_table, write_text


def read_instance(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    tables = results_dir / "tables"
    missing = [p for p in (tables / "claims.tsv", tables / "claims_values.tsv") if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"instance {str(results_dir)!r} has no {[p.name for p in missing]}: run the claims "
                                "config into it first (make claims)")
    return (pd.read_csv(tables / "claims.tsv", sep="\t", keep_default_na=False, na_values=[""]),
            pd.read_csv(tables / "claims_values.tsv", sep="\t", dtype={"unit": str}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("instances", nargs="+", type=Path, help="results directories of the instances")
    parser.add_argument("--out", type=Path, required=True, help="where tables/claims*.{tsv,md,tex} go")
    parser.add_argument("--title", default="Published claims tested on the testbed, pooled over instances")
    args = parser.parse_args(argv)
    if len(set(args.instances)) != len(args.instances):
        raise SystemExit(f"instances: repeated directories in {[str(p) for p in args.instances]}")
    instances = {path.name: read_instance(path) for path in args.instances}
    pooled, per_instance = pool_instances(instances)
    out = args.out / "tables"
    write_table(pooled, out / "claims.tsv")
    write_table(per_instance, out / "claims_instances.tsv")
    write_text(claims_markdown(pooled, args.title) + "\n" + instances_markdown(per_instance), out / "claims.md")
    write_text(claims_latex(pooled, args.title), out / "claims.tex")
    print(pooled[["claim", "ours", "ci_low", "ci_high", "ratio", "n_seeds", "p_holm", "instances_agree", "verdict"]]
          .to_string(index=False))


if __name__ == "__main__":
    main()
