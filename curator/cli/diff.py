"""`curator diff`."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable: {old, new, counts, newly_flagged, no_longer_flagged, suggested_label_changed, "
                   "new_examples, removed_examples} with the ids of each.")
@click.option("--show", default=10, show_default=True, help="Ids listed per kind of change in the table.")
def diff(old, new, as_json, show):
    """What changed from run OLD to run NEW (matched by example id): examples newly flagged, no longer
    flagged, flagged in both with another suggested label, new, and removed.

    Prints a short table for a person, or JSON for a job; writes nothing; exits 0.
    """
    from ..history import diff_runs
    from ..store import Run

    changes = diff_runs(Run(old), Run(new))
    if as_json:
        click.echo(json.dumps(changes.to_dict(), indent=2))
        return
    click.echo(f"{old} -> {new}")
    width = max(len(kind) for kind in changes.KINDS)
    for kind, count in changes.counts().items():
        ids = getattr(changes, kind)[:show]
        more = f", ... (+{count - len(ids)})" if count > len(ids) else ""
        click.echo(f"  {kind.replace('_', ' '):<{width}}  {count:>6}  {', '.join(ids)}{more}".rstrip())
