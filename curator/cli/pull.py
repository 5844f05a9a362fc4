"""`curator pull`."""

from __future__ import annotations

from pathlib import Path

import click

from .push import DATASET_ROOT, LABELSTUDIO, PROJECT


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@LABELSTUDIO
@PROJECT
@click.option("--out", type=click.Path(path_type=Path),
              help="Corrected manifest to write [RUN/corrected_manifest.csv]; changes.csv and "
                   "labelstudio-export.json go beside it.")
@DATASET_ROOT
def pull(run, url, project, out, dataset_root):
    """Fetch the team's reviews of RUN from Label Studio and apply them, as `curator apply` does.

    The token is read from $LABEL_STUDIO_API_KEY, never from the command line. The dataset itself is
    never touched.

    \b
    Writes RUN/labelstudio-export.json     the project's annotated tasks (Label Studio's JSON
                                           export; annotators as {id, email})
           RUN/corrected_manifest.csv      id,path,label of every example not removed, relabels applied
           RUN/changes.csv                 id,old_label,new_label,decision,who,when per reviewed
                                           example (who: the annotator's email)
    and prints the three paths. The latest submitted annotation of a task counts; skipped ones do not.
    """
    from ..labelstudio import pull as run_pull

    for path in run_pull(run, url, project=project, out=out, dataset_root=dataset_root):
        click.echo(str(path))
