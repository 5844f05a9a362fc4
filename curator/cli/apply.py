"""`curator apply`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("reviews", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path),
              help="Corrected manifest to write [RUN/corrected_manifest.csv]; changes.csv goes beside it.")
def apply(run, reviews, out):
    """Apply REVIEWS: write a corrected manifest and a change log.

    The dataset itself is never touched.

    REVIEWS is Label Studio's JSON export of tasks made by `curator export --to labelstudio`, or a CSV
    with columns id,decision,label (decision: relabel | remove | keep; empty = not reviewed yet), such
    as the file of `curator export --to csv` once filled in.

    \b
    Writes RUN/corrected_manifest.csv  id,path,label of every example not removed, relabels applied
           RUN/changes.csv             id,old_label,new_label,decision,who,when per reviewed example
    and prints both paths. Applying the same reviews again writes the same files.
    """
    from ..apply import apply_reviews

    for path in apply_reviews(run, reviews, out):
        click.echo(str(path))
