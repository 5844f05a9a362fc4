"""`curator report`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="HTML file to write [RUN/report.html].")
@click.option("--per-issue", default=48, show_default=True, help="Worst flagged examples shown per issue.")
@click.option("--dataset-root", type=click.Path(path_type=Path),
              help="Where the dataset's folder is now, if it moved since the run [the absolute path in "
                   "RUN/manifest.json].")
def report(run, out, per_issue, dataset_root):
    """Write a self-contained HTML report of RUN [RUN/report.html].

    One file, no external resources (styles inline, thumbnails as data URIs): the run summary (examples,
    classes, out-of-fold accuracy, stage times, scorers), a histogram per issue score, flags per class,
    suspected spurious groups, foreign batches, and the worst flagged examples of each issue as
    thumbnails with given -> suggested label and reasons. Open it in any browser or attach it to a mail.
    Prints the path written.
    """
    from ..report import write_report

    click.echo(str(write_report(run, out, per_issue=per_issue, dataset_root=dataset_root)))
