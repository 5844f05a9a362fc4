"""Command line: parse, call the Python API, print. No logic lives here; one module per command."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import CuratorError


class CuratorGroup(click.Group):
    """Turns CuratorError, and a command's bad option or argument, into a one-line message and a
    non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CuratorError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" See '{exc.ctx.command_path} --help'." if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=CuratorGroup)
@click.version_option(__version__, prog_name="curator")
def main() -> None:
    """curator: find mislabeled, outlier and spurious examples in a labelled dataset."""


from .plugins import plugins  # noqa: E402
from .score import score  # noqa: E402
from .export import export  # noqa: E402
from .report import report  # noqa: E402
from .apply import apply  # noqa: E402
from .diff import diff  # noqa: E402
from .push import push  # noqa: E402
from .pull import pull  # noqa: E402
from .retrain import retrain  # noqa: E402

main.add_command(score)
main.add_command(plugins)
main.add_command(export)
main.add_command(report)
main.add_command(apply)
main.add_command(diff)
main.add_command(push)
main.add_command(pull)
main.add_command(retrain)

if __name__ == "__main__":
    main()
