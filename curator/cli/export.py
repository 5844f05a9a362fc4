"""`curator export`."""

from __future__ import annotations

from pathlib import Path

import click

from ..export import ISSUE_CHOICES
from ..export import export as run_export


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--to", "to", metavar="NAME", required=True,
              help="Exporter: labelstudio, cvat, csv, or one a plugin adds (`curator plugins` lists them).")
@click.option("--out", type=click.Path(path_type=Path),
              help="File to write [RUN/<the exporter's default file>, e.g. RUN/labelstudio.json; "
                   "-<issue> before the suffix with --issue].")
@click.option("--issue", type=click.Choice(ISSUE_CHOICES), default="all", show_default=True,
              help="Export only the examples flagged for this issue.")
@click.option("--option", "option_pairs", metavar="KEY=VALUE", multiple=True,
              help="An option of the exporter (repeatable); `curator plugins --json` lists each exporter's.")
@click.option("--image-root", metavar="URL_OR_PATH",
              help="Label Studio: URL prefix the images are served under, or the dataset's path "
                   "relative to LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT [the dataset folder's name]; "
                   "the same as --option image_root=...")
@click.option("--dataset-root", type=click.Path(path_type=Path),
              help="Where the dataset's folder is now, if it moved since the run [the absolute path in "
                   "RUN/manifest.json].")
def export(run, to, out, issue, option_pairs, image_root, dataset_root):
    """Export flagged examples for a labelling tool or a spreadsheet.

    One entry per flagged example, worst first.

    \b
    labelstudio  RUN/labelstudio.json: import tasks (image, given label, issue, score, reasons;
                 curator's suggested label as a prediction) and RUN/labelstudio.config.xml: the
                 labelling config to paste into the project's Labeling Interface (or use
                 `curator push`, which does both through Label Studio's API).
    cvat         RUN/cvat.xml: CVAT for images 1.1, one tag per image (suggested label, with
                 the given label, issue and score as attributes).
    csv          RUN/review.csv: a spreadsheet with empty decision and label columns to fill in
                 and feed back through `curator apply`.

    Exporters from plugins write their own default file. Prints the paths written.
    """
    options = {}
    for pair in option_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--option")
        options[key.strip()] = value
    if image_root is not None:
        options["image_root"] = image_root
    for path in run_export(run, to, out=out, issue=issue, options=options, dataset_root=dataset_root):
        click.echo(str(path))
