"""R2M and its controls for one iteration, measured on the next iteration's rollouts (rule r2m_probe)."""
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import r2m_probe  # noqa: E402

r2m_probe(snakemake.input.rollouts, snakemake.input.policy, snakemake.input.base, snakemake.input.fresh,
          snakemake.params.r2m, int(snakemake.wildcards.seed), snakemake.threads, snakemake.params.device,
          snakemake.output.table, {Path(p).stem: p for p in snakemake.output.states}, snakemake.input.rollout_policy)
