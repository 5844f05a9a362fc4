"""`curator retrain`."""

from __future__ import annotations

from pathlib import Path

import click

from ..retrain.config import AUGMENTS, HOLDOUTS, METHODS, SELECTIONS


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
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for name, r in metrics["results"].items():
        # the configured selection, then the same training selected on inferred validation groups
        shown = [(name, r)] + [(f"{name} (inferred groups)", s) for c, s in r.get("selections", {}).items()
                               if c == "worst-group-inferred"]
        for label, s in shown:
            chosen = " ".join(f"{k}={v}" for k, v in s["selected"].items())
            val = (s.get("val") or {}).get("worst_group_accuracy")
            rows.append((label, fmt(s.get("accuracy")), fmt(s.get("worst_group_accuracy")), s.get("worst_group", ""),
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
              help="erm, clean (drop flagged), reweight, relabel (suggested labels), jtt, mat; groupdro needs "
                   "true groups.")
@click.option("--eval", "eval_set", type=click.Path(path_type=Path), help="Evaluation set [the validation set].")
@click.option("--val", type=click.Path(path_type=Path),
              help="Validation set for model selection [--val-fraction of DATASET].")
@click.option("--applied-reviews", type=click.Path(path_type=Path),
              help="Corrected manifest from `curator apply` (CSV id,path,label) for --method clean.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder [runs/<dataset>-retrain-<method>-<time>].")
@click.option("--model", "model", metavar="NAME",
              help="Final model: proxy (the proxies' CNN/MLP), wide (VGG-style CNN), resnet (small ResNet), or a "
                   "pretrained backbone fine-tuned whole: efficientnet_lite0, torchvision:<builder> [proxy].")
@click.option("--width", type=int, help="Base channels of the final model (the proxies use 16) [16].")
@click.option("--model-weights", metavar="FILE|random",
              help="Pretrained --model: a state-dict file, or random [the backbone's published weights].")
@click.option("--model-size", type=int, metavar="PIXELS",
              help="Pretrained --model: side its input images are resized to [the backbone's, 224].")
@click.option("--augment", type=click.Choice(AUGMENTS),
              help="Training augmentation; auto: random crops for images, none for vectors [auto].")
@click.option("--epochs", type=int, help="Epochs of every model [8].")
@click.option("--batch-size", type=int, help="Batch size [128, fewer for small sets].")
@click.option("--seed", type=int, help="Random seed [0].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--holdout", type=click.Choice(HOLDOUTS), help="MAT held-out logits: the run's proxies or XRM twins [proxies].")
@click.option("--tau", callback=_floats("--tau"), help="MAT temperature(s), comma-separated grid [1].")
@click.option("--floor", callback=_floats("--floor"), help="MAT floor(s) of p_ho(y|x), comma-separated grid [0.01].")
@click.option("--holdout-epochs", type=int, help="Epochs of the XRM twins with --holdout xrm [--epochs].")
@click.option("--lr", callback=_floats("--lr"), help="Learning rate(s) [0.05].")
@click.option("--weight-decay", callback=_floats("--weight-decay"), help="Weight decay(s) [5e-4].")
@click.option("--upweight", callback=_floats("--upweight"), help="JTT error-set upsampling λ grid [10].")
@click.option("--jtt-epochs", type=int, help="Epochs of JTT's identification model [1].")
@click.option("--relabel-confidence", type=float,
              help="relabel: least held-out probability of a suggested label to train on it [0.5].")
@click.option("--select", "selection", type=click.Choice(SELECTIONS),
              help="Model selection on validation: worst-group, accuracy or last epoch [worst-group].")
@click.option("--val-fraction", type=float, help="Share of DATASET held out when no --val [0.1].")
@click.option("--format", "fmt", metavar="NAME", default="auto", show_default=True,
              help="Dataset format (`curator plugins` lists them).")
@click.option("--label-column", default="label", show_default=True, help="Label column of a table or manifest.")
@click.option("--image-size", default=64, show_default=True, help="Largest side images are resized to.")
@click.option("--quiet", is_flag=True, help="No progress messages or table; print only the output folder.")
def retrain(dataset, run, method, eval_set, val, applied_reviews, out, model, width, model_weights, model_size,
            augment, epochs, batch_size, seed,
            device, holdout, tau, floor, holdout_epochs, lr, weight_decay, upweight, jtt_epochs, relabel_confidence,
            selection, val_fraction, fmt, label_column, image_size, quiet):
    """Train a final model on DATASET with METHOD and, beside it, ERM on the same budget.

    Writes OUT/model.pt (a state_dict: torch.load(..., weights_only=True)), OUT/model.json (what rebuilds
    the model) and OUT/metrics.json (overall, per-class, per-group and worst-group accuracy on the
    evaluation set for METHOD and for erm, under each validation criterion). Prints a table, then the
    output folder.
    """
    from ..adapter import DatasetSettings
    from ..retrain import retrain as run_retrain

    options = {k: v for k, v in {"model": model, "width": width, "model_weights": model_weights,
                                 "model_size": model_size, "augment": augment, "epochs": epochs,
                                 "batch_size": batch_size, "seed": seed, "holdout": holdout, "taus": tau,
                                 "floors": floor, "holdout_epochs": holdout_epochs, "lrs": lr,
                                 "weight_decays": weight_decay, "upweights": upweight, "jtt_epochs": jtt_epochs,
                                 "relabel_confidence": relabel_confidence, "selection": selection,
                                 "val_fraction": val_fraction}.items() if v is not None}
    log = None if quiet else (lambda msg: click.echo(msg, err=True))
    result = run_retrain(dataset, method=method, run=run, eval=eval_set, val=val, applied_reviews=applied_reviews,
                         out=out, device=device, log=log,
                         loader=DatasetSettings(fmt, label_column, image_size), **options)
    if not quiet:
        click.echo(_table(result.metrics))
        click.echo()
    click.echo(str(result.path))
