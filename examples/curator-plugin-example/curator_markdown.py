"""An exporter for curator: the review queue as a Markdown checklist, for a pull request or an issue.

``curator export RUN --to markdown`` writes RUN/review.md: one checkbox line per flagged example, most
urgent first, with its picture linked, the given and suggested label, the issue, the score and the
reasons. Option ``title`` (``--option title="Night 12"``) sets the heading.
"""

from pathlib import Path

import curator
from curator.atomic import write_text
from curator.export.images import ExampleImages


def write_markdown(run: curator.Run, rows, out: Path, options) -> list[Path]:
    images = ExampleImages(run)
    lines = [f"# {options['title']}", "", f"{len(rows)} flagged examples of `{run.path.name}`, most urgent first.", ""]
    for row in rows.itertuples(index=False):
        path = images.path(row.id)
        picture = f" [image]({(images.root / path).as_uri()})" if path is not None else ""
        lines.append(f"- [ ] `{row.id}`{picture}: given **{row.label}**, suggested **{row.suggested_label}** "
                     f"({row.issues}, score {row.score:.3f}; {row.reasons})")
    write_text(out, "\n".join(lines) + "\n")
    return [out]


@curator.hookimpl
def register_exporters(register):
    register(curator.Exporter(
        name="markdown",
        default_file="review.md",
        write=write_markdown,
        description="a Markdown checklist of the flagged examples, for a pull request or an issue",
        options={"title": "curator review"},
    ))
