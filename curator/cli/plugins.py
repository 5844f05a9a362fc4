"""`curator plugins`."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """List every installed scorer with its package, version, issue type and requirements."""
    from ..plugins import load_scorers

    registry = load_scorers()
    described = [entry.describe() for entry in registry.scorers.values()]
    if as_json:
        click.echo(json.dumps({"scorers": described, "load_errors": registry.load_errors}, indent=2))
        return
    for d in described:
        click.echo(f"{d['name']:<24} {'/'.join(d['issue']):<12} requires {','.join(d['requires']):<24} "
                   f"{d['package']} {d['version']}")
        if d["description"]:
            click.echo(f"{'':<24} {d['description']}")
    for err in registry.load_errors:
        click.echo(f"{err['plugin']:<24} FAILED TO LOAD ({err['package']}): {err['error']}")
