"""`curator retrain`."""

from __future__ import annotations

from pathlib import Path

import click

from ..retrain.config import HOLDOUTS, METHODS, SELECTIONS


def _floats(option: str):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            return tuple(float(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected comma-separated numbers", param_hint=option)
    return parse


def _table(metrics: dict) -> str:
    rows = [("method", "accuracy", "worst-group", "worst group", "val worst", "selected")]
    for name, r in metrics["results"].items():
        fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        chosen = " ".join(f"{k}={v}" for k, v in r["selected"].items())
        val = (r.get("val") or {}).get("worst_group_accuracy")
        rows.append((name, fmt(r.get("accuracy")), fmt(r.get("worst_group_accuracy")), r.get("worst_group", ""),
                     fmt(val), chosen))
    gain = metrics["gain"]
    if metrics["method"] != "erm" and gain:
        rows.append(("gain", f"{gain.get('accuracy', 0):+.3f}",
                     f"{gain['worst_group_accuracy']:+.3f}" if "worst_group_accuracy" in gain else "", "", "", ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--run", type=click.Path(path_type=Path), help="Finished `curator score` run over DATASET "
              "(flags for clean/reweight, held-out logits for mat).")
@click.option("--method", type=click.Choice(METHODS), default="mat", show_default=True,
              help="erm, clean (drop flagged), reweight, jtt, mat; groupdro needs true groups.")
@click.option("--eval", "eval_set", type=click.Path(path_type=Path), help="Evaluation set [the validation set].")
@click.option("--val", type=click.Path(path_type=Path),
              help="Validation set for model selection [--val-fraction of DATASET].")
@click.option("--applied-reviews", type=click.Path(path_type=Path),
              help="Corrected manifest from `curator apply` (CSV id,path,label) for --method clean.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder [runs/<dataset>-retrain-<method>-<time>].")
@click.option("--epochs", type=int, help="Epochs of every model [8].")
@click.option("--seed", type=int, help="Random seed [0].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--holdout", type=click.Choice(HOLDOUTS), help="MAT held-out logits: the run's proxies or XRM twins [proxies].")
@click.option("--tau", callback=_floats("--tau"), help="MAT temperature(s), comma-separated grid [1].")
@click.option("--floor", type=float, help="MAT floor of p_ho(y|x) [0.01].")
@click.option("--lr", callback=_floats("--lr"), help="Learning rate(s) [0.05].")
@click.option("--weight-decay", callback=_floats("--weight-decay"), help="Weight decay(s) [5e-4].")
@click.option("--upweight", callback=_floats("--upweight"), help="JTT error-set upsampling λ grid [10].")
@click.option("--jtt-epochs", type=int, help="Epochs of JTT's identification model [1].")
@click.option("--width", type=int, help="Model width (channels of the first conv) [16, as the proxies].")
@click.option("--select", "selection", type=click.Choice(SELECTIONS),
              help="Model selection on validation: worst-group, accuracy or last epoch [worst-group].")
@click.option("--val-fraction", type=float, help="Share of DATASET held out when no --val [0.1].")
@click.option("--format", "fmt", metavar="NAME", default="auto", show_default=True,
              help="Dataset format (`curator plugins` lists them).")
@click.option("--label-column", default="label", show_default=True, help="Label column of a table or manifest.")
@click.option("--image-size", default=64, show_default=True, help="Largest side images are resized to.")
@click.option("--quiet", is_flag=True, help="No progress messages or table; print only the output folder.")
def retrain(dataset, run, method, eval_set, val, applied_reviews, out, epochs, seed, device, holdout, tau, floor,
            lr, weight_decay, upweight, jtt_epochs, width, selection, val_fraction, fmt, label_column, image_size,
            quiet):
    """Train a final model on DATASET with METHOD and, beside it, ERM on the same budget.

    Writes OUT/model.pt (a state_dict: torch.load(..., weights_only=True)), OUT/model.json (what rebuilds
    the model) and OUT/metrics.json (overall, per-class, per-group and worst-group accuracy on the
    evaluation set for METHOD and for erm). Prints a table, then the output folder.
    """
    from ..adapter import DatasetSettings
    from ..retrain import retrain as run_retrain

    options = {k: v for k, v in {"epochs": epochs, "seed": seed, "holdout": holdout, "taus": tau, "floor": floor,
                                 "lrs": lr, "weight_decays": weight_decay, "upweights": upweight,
                                 "jtt_epochs": jtt_epochs, "width": width, "selection": selection,
                                 "val_fraction": val_fraction}.items() if v is not None}
    log = None if quiet else (lambda msg: click.echo(msg, err=True))
    result = run_retrain(dataset, method=method, run=run, eval=eval_set, val=val, applied_reviews=applied_reviews,
                         out=out, device=device, log=log,
                         loader=DatasetSettings(fmt, label_column, image_size), **options)
    if not quiet:
        click.echo(_table(result.metrics))
        click.echo()
    click.echo(str(result.path))
