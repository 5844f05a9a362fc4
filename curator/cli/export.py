"""`curator export`."""

from __future__ import annotations

from pathlib import Path

import click

from ..export import FORMATS, ISSUE_CHOICES
from ..export import export as run_export


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--to", "to", type=click.Choice(FORMATS), required=True,
              help="Format of the labelling tool.")
@click.option("--out", type=click.Path(path_type=Path),
              help="File to write [RUN/labelstudio.json | RUN/cvat.xml | RUN/review.csv; "
                   "-<issue> before the suffix with --issue].")
@click.option("--issue", type=click.Choice(ISSUE_CHOICES), default="all", show_default=True,
              help="Export only the examples flagged for this issue.")
@click.option("--image-root", metavar="URL_OR_PATH",
              help="Label Studio only: URL prefix the images are served under, or the dataset's path "
                   "relative to LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT [the dataset folder's name].")
@click.option("--dataset-root", type=click.Path(path_type=Path),
              help="Where the dataset's folder is now, if it moved since the run [the absolute path in "
                   "RUN/manifest.json].")
def export(run, to, out, issue, image_root, dataset_root):
    """Export flagged examples for Label Studio, CVAT or a spreadsheet.

    One entry per flagged example, worst first.

    \b
    labelstudio  RUN/labelstudio.json: import tasks (image, given label, issue, score, reasons;
                 curator's suggested label as a prediction) and RUN/labelstudio.config.xml: the
                 labelling config to paste into the project's Labeling Interface.
    cvat         RUN/cvat.xml: CVAT for images 1.1, one tag per image (suggested label, with
                 the given label, issue and score as attributes).
    csv          RUN/review.csv: a spreadsheet with empty decision and label columns to fill in
                 and feed back through `curator apply`.

    Prints the paths written.
    """
    for path in run_export(run, to, out=out, issue=issue, image_root=image_root, dataset_root=dataset_root):
        click.echo(str(path))
