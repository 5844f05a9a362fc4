"""``report.html``: one self-contained page a person reads the morning after a run.

Run summary, per-issue score histograms (inline SVG), flags per class, suspected spurious groups
(when the manifest has ``spurious_groups``), foreign batches (``foreign_batches``) and the worst
flagged examples of each issue as thumbnails with given -> suggested label and reasons. Styles and
thumbnails (PNG data URIs) are inline; a Content-Security-Policy allows nothing else to load or run,
and every text that comes from the data (ids, paths, class names, reasons) is HTML-escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_text
from .errors import ConfigError
from .export.images import ExampleImages, png_data_uri, thumbnail
from .export.queue import ISSUES
from .store import Run

BINS = 20

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       margin: 0 auto; max-width: 1180px; padding: 24px; background: #fafbfc; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #dde1e6; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.muted { color: #5f6b7a; } .small { font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0 12px; background: #fff; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e6e9ed; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cols { display: flex; flex-wrap: wrap; gap: 12px 28px; }
.stat { background: #fff; border: 1px solid #e1e5ea; border-radius: 6px; padding: 8px 14px; }
.stat b { display: block; font-size: 20px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 10px; }
.strip { display: flex; flex-wrap: wrap; gap: 6px; min-width: 880px; } .strip .card { width: 104px; }
.card { background: #fff; border: 1px solid #e1e5ea; border-radius: 6px; padding: 8px; overflow-wrap: anywhere; }
.card img, .noimg { display: block; width: 96px; height: 96px; object-fit: contain; margin: 0 auto 6px;
       image-rendering: pixelated; background: #eef0f3; }
.noimg { line-height: 96px; text-align: center; font-size: 11px; color: #8a94a3; }
.labels { font-weight: 600; } .suggested { color: #b3261e; } .kept { color: #5f6b7a; font-weight: 400; }
.score { float: right; color: #5f6b7a; font-variant-numeric: tabular-nums; }
.id { font-size: 11px; color: #5f6b7a; } .reasons { font-size: 12px; margin-top: 4px; }
svg text { font: 11px system-ui, sans-serif; fill: #5f6b7a; }
.warn { background: #fff4e5; border: 1px solid #f0c36d; padding: 6px 10px; border-radius: 6px; }
"""

# Records whether every thumbnail decoded (tests read it back with a headless browser), and tells
# the reader when one did not.
SCRIPT = """
addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-thumbnails-loaded", ok + "/" + imgs.length);
  if (ok < imgs.length) {
    var note = document.getElementById("broken");
    note.textContent = (imgs.length - ok) + " of " + imgs.length + " thumbnails could not be shown.";
    note.hidden = false;
  }
});
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def histogram_svg(values: np.ndarray, flagged: np.ndarray, title: str, width: int = 340, height: int = 150) -> str:
    """Inline SVG histogram of ``values`` (N,) in [0, 1] over BINS bins; flagged examples stacked in red."""
    edges = np.linspace(0.0, 1.0, BINS + 1)
    clipped = np.clip(values, 0.0, 1.0)
    all_counts, _ = np.histogram(clipped, edges)
    flag_counts, _ = np.histogram(clipped[flagged], edges)
    left, bottom, top = 34, 22, 18
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max(int(all_counts.max()), 1)
    bar_w = plot_w / BINS
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{_e(title)}">', f'<text x="{left}" y="12">{_e(title)}</text>']
    for k in np.flatnonzero(all_counts):
        x = left + k * bar_w
        parts.append(f"<g><title>{edges[k]:.2f}\u2013{edges[k + 1]:.2f}: {all_counts[k]} examples, "
                     f"{flag_counts[k]} flagged</title>")
        for count, colour in ((all_counts[k], "#9db4cf"), (flag_counts[k], "#d2584f")):
            h = plot_h * count / peak
            if count:
                parts.append(f'<rect x="{x + 0.5:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 1:.1f}" '
                             f'height="{h:.1f}" fill="{colour}"/>')
        parts.append("</g>")
    base = top + plot_h
    parts += [f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#8a94a3"/>',
              f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>',
              f'<text x="{left - 4}" y="{base}" text-anchor="end">0</text>']
    for tick in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{left + tick * plot_w:.1f}" y="{base + 14}" text-anchor="middle">{tick:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


class _Thumbnails:
    """Data-URI thumbnails by example id, each made once."""

    def __init__(self, run: Run, side: int):
        self.images, self.side, self.cache = ExampleImages(run), side, {}

    def tag(self, example_id: str) -> str:
        if example_id not in self.cache:
            img = self.images.image(example_id)
            self.cache[example_id] = None if img is None else png_data_uri(thumbnail(img, self.side))
        uri = self.cache[example_id]
        if uri is None:
            return '<div class="noimg">no image</div>'
        return f'<img src="{uri}" alt="{_e(example_id)}" title="{_e(example_id)}">'


def _summary(run: Run) -> str:
    m = run.manifest
    ds, proxy = m.get("dataset", {}), m.get("proxy", {})
    counts = m.get("flag_counts") or {k: int(run.scores[f"is_{k}"].sum()) for k in ISSUES}
    stats = [("examples", ds.get("n_examples", len(run.scores))), ("classes", ds.get("n_classes", len(run.classes))),
             ("out-of-fold accuracy", f"{proxy['oof_accuracy']:.3f}" if "oof_accuracy" in proxy else "n/a")]
    stats += [(f"{k} flagged", counts.get(k, 0)) for k in ISSUES]
    out = ['<div class="cols">', *(f'<div class="stat"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in stats), "</div>"]
    skipped = ds.get("skipped_files") or []
    out.append(f'<p class="muted">dataset <code>{_e(ds.get("path", "?"))}</code> ({_e(ds.get("kind", "?"))}, input '
               f'{_e(tuple(ds.get("input_shape", [])))}, {len(skipped)} file(s) skipped) \u00b7 seed {_e(m.get("seed", "?"))}'
               f' \u00b7 device {_e(m.get("device", {}).get("type", "?"))} \u00b7 created {_e(m.get("created", "?"))}'
               f' \u00b7 curator {_e(m.get("curator_version", "?"))}</p>')
    out.append('<div class="cols"><div><h3>Stage times</h3><table><tr><th>stage</th><th class="num">seconds</th>'
               '<th class="num">peak RSS MB</th></tr>')
    for stage, info in m.get("stages", {}).items():
        out.append(f'<tr><td>{_e(stage)}</td><td class="num">{info.get("seconds", 0):.1f}</td>'
                   f'<td class="num">{_e(info.get("peak_rss_mb", ""))}</td></tr>')
    out.append('</table></div><div><h3>Scorers</h3><table><tr><th>scorer</th><th>issue</th><th>status</th>'
               '<th class="num">seconds</th></tr>')
    for name, info in m.get("scorers", {}).items():
        status = info.get("status", "?") if info.get("status") != "failed" else f"failed: {info.get('error', '')}"
        out.append(f'<tr><td>{_e(name)}</td><td>{_e("/".join(info.get("issue", [])))}</td><td>{_e(status)}</td>'
                   f'<td class="num">{info.get("seconds", 0):.1f}</td></tr>')
    out.append("</table></div></div>")
    return "\n".join(out)


def _histograms(scores: pd.DataFrame) -> str:
    svgs = []
    for issue in ISSUES:
        values = scores[f"{issue}_score"].to_numpy(float)
        flagged = scores[f"is_{issue}"].to_numpy(bool)
        svgs.append(histogram_svg(values, flagged, f"{issue}_score: {int(flagged.sum())} of {len(values)} flagged"))
    return ('<p class="muted small">0 = fine, 1 = worst; red = flagged.</p><div class="cols">'
            + "".join(svgs) + "</div>")


def _per_class(run: Run) -> str:
    scores = run.scores
    groups = scores.groupby("label", sort=False)
    suggested_into = scores.loc[scores["is_mislabeled"], "suggested_label"].value_counts()
    rows = ['<table><tr><th>class</th><th class="num">examples</th>'
            + "".join(f'<th class="num">{k}</th>' for k in ISSUES)
            + '<th class="num">suggested as new label</th></tr>']
    for name in run.classes:
        if name not in groups.groups:
            continue
        g = groups.get_group(name)
        cells = "".join(f'<td class="num">{int(g[f"is_{k}"].sum())}</td>' for k in ISSUES)
        rows.append(f'<tr><td>{_e(name)}</td><td class="num">{len(g)}</td>{cells}'
                    f'<td class="num">{int(suggested_into.get(name, 0))}</td></tr>')
    rows.append("</table>")
    return "".join(rows)


def _group_rows(groups: list[dict], thumbs: _Thumbnails, cells, show: int = 8) -> str:
    """One table row per group: ``cells(group)`` (already escaped ``<td>``s), then up to ``show``
    thumbnails of its members side by side."""
    out = []
    for group in groups:
        ids = [str(i) for i in group.get("ids", [])]
        pictures = "".join(f'<div class="card">{thumbs.tag(i)}<div class="id">{_e(i)}</div></div>'
                           for i in ids[:show])
        more = f'<p class="muted small">and {len(ids) - show} more</p>' if len(ids) > show else ""
        out.append(f'<tr>{cells(group)}<td><div class="strip">{pictures}</div>{more}</td></tr>')
    return "".join(out)


def _fraction(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else _e(value if value is not None else "")


def _spurious_groups(run: Run, thumbs: _Thumbnails) -> str:
    groups = run.manifest.get("spurious_groups")
    if not groups:
        return '<p class="muted">No suspected spurious groups in this run.</p>'

    def cells(g: dict) -> str:
        return (f'<td>{_e(g.get("class", ""))}</td><td class="num">{_e(g.get("size", len(g.get("ids", []))))}</td>'
                f'<td class="num">{_fraction(g.get("heldout_accuracy"))}</td>')

    return ('<table><tr><th>class</th><th class="num">size</th><th class="num">held-out accuracy</th>'
            f"<th>examples</th></tr>{_group_rows(groups, thumbs, cells)}</table>")


def _foreign_batches(run: Run, thumbs: _Thumbnails) -> str:
    batches = run.manifest.get("foreign_batches")
    if not batches:
        return '<p class="muted">No foreign batches in this run.</p>'

    def cells(b: dict) -> str:
        return f'<td class="num">{_e(b.get("size", ""))}</td>' + "".join(
            f'<td class="num">{_fraction(b.get(key))}</td>'
            for key in ("label_mix_p", "heldout_accuracy", "chance_accuracy"))

    return ('<p class="muted small">Similar examples whose labels are mixed like those of the whole dataset '
            "(label mix p: chi-square test against the class frequencies) and which the held-out model "
            'predicts at chance: likely from another source. Every member is flagged as an outlier.</p><table><tr>'
            '<th class="num">size</th><th class="num">label mix p</th>'
            '<th class="num">held-out accuracy</th><th class="num">chance</th><th>examples</th></tr>'
            f"{_group_rows(batches, thumbs, cells)}</table>")


def _examples(scores: pd.DataFrame, issue: str, thumbs: _Thumbnails, per_issue: int) -> str:
    flagged = scores[scores[f"is_{issue}"]].sort_values([f"{issue}_score", "id"], ascending=[False, True],
                                                        kind="stable")
    if flagged.empty:
        return f'<p class="muted">No example flagged as {issue}.</p>'
    shown = flagged.head(per_issue)
    note = (f'<p class="muted">{len(flagged)} flagged; the {len(shown)} worst shown, all in review_queue.csv.</p>'
            if len(flagged) > len(shown) else f'<p class="muted">{len(flagged)} flagged.</p>')
    cards = []
    for row in shown.itertuples(index=False):
        given, suggested = _e(row.label), _e(row.suggested_label)
        labels = (f'{given} \u2192 <span class="suggested">{suggested}</span>' if row.suggested_label != row.label
                  else f'{given} <span class="kept">(label kept)</span>')
        cards.append(f'<div class="card">{thumbs.tag(row.id)}<span class="score">{getattr(row, f"{issue}_score"):.3f}'
                     f'</span><div class="labels">{labels}</div><div class="id">{_e(row.id)}</div>'
                     f'<div class="reasons">{_e(row.reasons)}</div></div>')
    return note + '<div class="grid">' + "".join(cards) + "</div>"


def build_report(run: Run | str | Path, *, per_issue: int = 48, thumbnail_px: int = 96) -> str:
    """The report of ``run`` as one HTML string. ``per_issue``: the worst N flagged examples shown per
    issue; ``thumbnail_px``: thumbnail box side in pixels."""
    run = run if isinstance(run, Run) else Run(run)
    if per_issue < 0:
        raise ConfigError(f"--per-issue {per_issue}: must be >= 0")
    thumbs = _Thumbnails(run, thumbnail_px)
    scores = run.scores
    if thumbs.images.has_images:
        thumbs.images.require(scores["id"][scores[[f"is_{issue}" for issue in ISSUES]].any(axis=1)])
    no_pictures = ("" if thumbs.images.has_images else
                   '<p class="muted">This dataset has no images (a table); examples are shown without pictures.</p>')
    body = [
        f"<h1>curator report \u00b7 {_e(run.path.name)}</h1>",
        f'<p class="muted">{_e(run.manifest.get("dataset", {}).get("name", ""))}</p>',
        '<p id="broken" class="warn" hidden></p>',
        "<h2>Run</h2>", _summary(run),
        "<h2>Issue scores</h2>", _histograms(scores),
        "<h2>Flags per class</h2>", _per_class(run),
        "<h2>Suspected spurious groups</h2>", _spurious_groups(run, thumbs),
        "<h2>Foreign batches</h2>", _foreign_batches(run, thumbs),
    ]
    for issue in ISSUES:
        body += [f"<h2>Flagged: {issue}</h2>", no_pictures, _examples(scores, issue, thumbs, per_issue)]
    body.append(f'<p class="muted small">Written by curator from {_e(run.path)}.</p>')
    csp = f"default-src 'none'; img-src data:; style-src {_sha256(STYLE)}; script-src {_sha256(SCRIPT)}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f"<title>curator report \u00b7 {_e(run.path.name)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def write_report(run: Run | str | Path, out: str | Path | None = None, *, dataset_root: str | Path | None = None,
                 **options) -> Path:
    """Write ``build_report(run)`` to ``out`` (default RUN/report.html); returns the path.
    ``dataset_root``: the dataset's folder when it moved after the run (see :class:`Run`)."""
    run = run if isinstance(run, Run) else Run(run, dataset_root)
    out = Path(out) if out is not None else run.path / "report.html"
    write_text(out, build_report(run, **options))
    return out
