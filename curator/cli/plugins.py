"""`curator plugins`."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output: {scorers, exporters, adapters, errors}.")
@click.option("--strict", is_flag=True, help="A plugin that would be skipped is an error instead (exit 2).")
def plugins(as_json, strict):
    """List every installed scorer, exporter and dataset format with its package and version.

    Scorers show their issue type and the artifacts they require; exporters the `curator export --to`
    name and default file; dataset formats the `--format` name. A plugin that failed to import, or
    implements an unknown or malformed hook, is listed under errors with its package and the hook.
    """
    from ..plugins import load_plugins

    registry = load_plugins(strict=strict)
    if as_json:
        click.echo(json.dumps(registry.describe(), indent=2))
    else:
        described = registry.describe()
        click.echo("scorers")
        for d in described["scorers"]:
            click.echo(f"  {d['name']:<22} {'/'.join(d['issue']):<12} requires {','.join(d['requires']):<24} "
                       f"{d['package']} {d['version']}")
            if d["description"]:
                click.echo(f"  {'':<22} {d['description']}")
        click.echo("exporters (curator export --to NAME)")
        for d in described["exporters"]:
            click.echo(f"  {d['name']:<22} writes RUN/{d['default_file']:<27} {d['package']} {d['version']}")
            if d["description"]:
                click.echo(f"  {'':<22} {d['description']}")
        click.echo("dataset formats (--format NAME)")
        for d in described["adapters"]:
            click.echo(f"  {d['name']:<22} priority {d['priority']:<30} {d['package']} {d['version']}")
            if d["description"]:
                click.echo(f"  {'':<22} {d['description']}")
        for err in registry.errors:
            where = f" in {err['hook']}" if err["hook"] else ""
            click.echo(f"SKIPPED plugin {err['plugin']!r} ({err['package']}){where}: {err['error']}")
