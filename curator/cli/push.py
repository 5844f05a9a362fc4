"""`curator push`."""

from __future__ import annotations

from pathlib import Path

import click

from ..export import ISSUE_CHOICES

LABELSTUDIO = click.option("--labelstudio", "url", metavar="URL", envvar="LABEL_STUDIO_URL", required=True,
                           help="The Label Studio server, e.g. http://localhost:8080 [$LABEL_STUDIO_URL].")
PROJECT = click.option("--project", metavar="NAME_OR_ID",
                       help="The project's id (a number), or its exact title [curator <dataset folder name>].")
DATASET_ROOT = click.option("--dataset-root", type=click.Path(path_type=Path),
                            help="Where the dataset's folder is now, if it moved since the run [the absolute "
                                 "path in RUN/manifest.json].")


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@LABELSTUDIO
@PROJECT
@click.option("--issue", type=click.Choice(ISSUE_CHOICES), default="all", show_default=True,
              help="Push only the examples flagged for this issue.")
@click.option("--document-root", type=click.Path(path_type=Path),
              help="The server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; image references are relative to it "
                   "[the folder holding the dataset folder].")
@DATASET_ROOT
def push(run, url, project, issue, document_root, dataset_root):
    """Put RUN's flagged examples into a Label Studio project, each example once.

    The token is read from $LABEL_STUDIO_API_KEY (a legacy token or a personal access token), never
    from the command line.

    Finds the project by id or exact title, or creates it with curator's labelling config (the image,
    curator's summary, one choice per class, a 'remove' choice); adds the dataset folder as Local
    Files storage (not synced) unless one covers it; imports one task per flagged example whose
    curator_id is not in the project yet, worst first, with the suggested label as a prediction.
    Pushing every night adds the new examples and never duplicates one.

    The server must see the dataset at the same path and run with
    LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to
    a folder above it (--document-root). Prints the project's id and URL and what was imported.
    """
    from ..labelstudio import push as run_push

    done = run_push(run, url, project=project, issue=issue, document_root=document_root, dataset_root=dataset_root)
    click.echo(f"project {done.project_id} {done.title!r}{' (created)' if done.created else ''}: {done.url}")
    if done.storage is not None:
        click.echo(f"local files storage {done.storage}{' (added)' if done.storage_added else ''}")
    click.echo(f"{done.imported} tasks imported ({done.predictions} predictions), "
               f"{done.present} already in the project")
