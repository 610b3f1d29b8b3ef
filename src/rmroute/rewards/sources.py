"""Sheet sources that are not a checkpoint: R2M rows (no heavy imports: the workflow reads this
while it parses the config)."""

from __future__ import annotations

R2M_SOURCES = {"r2m": "policy", "r2m-noise": "noise", "r2m-untrained": "untrained"}  # sheet source prefix -> feedback


def parse_r2m_source(source: str) -> tuple[str, str] | None:
    """`r2m:<base rm_id>` (R2M), `r2m-noise:<base>` or `r2m-untrained:<base>` (its controls) ->
    (feedback, base rm_id); None for any other sheet source."""
    prefix, sep, base = str(source).partition(":")
    if not sep or prefix not in R2M_SOURCES:
        return None
    return R2M_SOURCES[prefix], base
