"""Route one iteration's rollouts and score them with the routed RMs only (rule route_and_score)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import route_and_score  # noqa: E402

route_and_score(snakemake.input.rollouts, snakemake.params.method, snakemake.params.pool,
                snakemake.input.previous_state[0] if snakemake.input.previous_state else None, snakemake.input.offline_router or None,
                int(snakemake.wildcards.seed), int(snakemake.wildcards.it), snakemake.threads, snakemake.params.device,
                snakemake.output.pairs, snakemake.output.routing, snakemake.output.state)
