"""adversarial_distance: how small an input perturbation flips the prediction (Carlini et al. 2019, "adv").

Carlini, Erlingsson & Papernot (2019) rank examples by the L2 norm of the smallest adversarial
perturbation; examples close to the decision boundary are atypical (outliers, ambiguous inputs). The
distance is measured with batched DeepFool (Moosavi-Dezfooli et al. 2016) on the out-of-fold proxy
(fold ``ctx.folds[i]``, which never trained on example i), in the normalised input space the proxy
reads. As in the paper, the boundary is the one around the model's *prediction*, not the given label:
the metric asks how stable the model's decision is, and stays meaningful when the label is wrong (a
mislabeled but typical example is far from the boundary; the label is another scorer's business).

DeepFool, per example: linearise the logit differences f_k = z_k - z_pred around the current point for
the ``candidates - 1`` runner-up classes (top logits at the clean input), step onto the nearest
linearised boundary, r_i = (|f_l| + 1e-4) / ||grad f_l||^2 * grad f_l, and repeat from
x + (1 + overshoot) * sum r_i until the prediction changes or ``max_iter`` steps are spent. The
distance is ||(1 + overshoot) * sum r_i||_2. An example that has not flipped after ``max_iter`` steps
gets the distance reached so far: a lower bound on its true distance. An example whose logit
differences have zero gradient cannot be moved and counts as infinitely far.

Main column: the rank of the distance over the dataset as a fraction in (0, 1]; the example with the
smallest distance scores 1 (higher = closer to the boundary = more suspicious).
Extra column ``adversarial_distance_log``: minus the natural log of the same distance (higher = closer),
the column whose tail the outlier flag reads: a rank has no tail, so an example far closer to the
boundary than the rest could never stand out on it.
Extra column ``adversarial_distance_margin``: minus the free last-layer margin distance
min_{k != pred} (z_pred - z_k) / ||w_pred - w_k|| (the distance in feature space from the penultimate
features to the nearest boundary of the head, from the out-of-fold logits and head weights, no
gradients); higher = closer = more suspicious.

Options (``[scorers.adversarial_distance]``): ``max_iter`` (default 3), ``overshoot`` (0.02),
``candidates`` (classes considered, the prediction included; default 3), ``batch_size`` (512),
``subset``: run DeepFool on a random subset of at most ``subset`` examples (seeded by the run seed;
0 = every example; default every example on a GPU, at most 100,000 on a CPU). Every other example
gets its last-layer margin mapped onto the DeepFool distances by quantile (its margin's percentile
among the subset's margins picks the same percentile of the subset's DeepFool distances) and is
ranked with them.

Shardable: ``score_rows`` runs DeepFool on its rows and returns their raw distances; ``finish``
(``rank_distances``) fills in the examples outside the subset and ranks, on every row at once.

Cost: about ``max_iter`` forward passes and ``max_iter * (candidates - 1)`` input-gradient passes per
example in the worst case, fewer as examples flip and leave the batch. For the attack the proxy is
copied with batch norm folded into the convolutions (torch.fx) and channels-last memory, the same
function about twice as fast to differentiate on a CPU.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

import curator

DEFAULTS = {"max_iter": 3, "overshoot": 0.02, "candidates": 3, "batch_size": 512, "subset": None}
CPU_SUBSET = 100_000


class Attack(NamedTuple):
    """DeepFool result for a batch of B inputs.

    perturbation: (B, ...) float32, the total perturbation (overshoot included)
    distance:     (B,) float32, its L2 norm; inf where the logits had no gradient to follow
    flipped:      (B,) bool, the argmax of ``inputs + perturbation`` differs from the clean one
    """

    perturbation: torch.Tensor
    distance: torch.Tensor
    flipped: torch.Tensor


def deepfool(model, inputs: torch.Tensor, *, max_iter: int = 3, overshoot: float = 0.02,
             candidates: int = 3) -> Attack:
    """Batched L2 DeepFool against ``model(x) -> logits (B, C)`` on ``inputs`` (B, ...).

    ``candidates`` classes (the top logits at the clean input, prediction included) are attacked.
    Rows of a batch must be independent (eval mode), so the gradient of the *sum* over the batch of
    one logit difference is every row's own gradient: one backward per runner-up class per step.
    Rows that have flipped leave the batch.
    """
    x0 = inputs.detach()
    n = len(x0)
    r_total = torch.zeros_like(x0)
    flipped = torch.zeros(n, dtype=torch.bool, device=x0.device)
    stalled = torch.zeros(n, dtype=torch.bool, device=x0.device)
    active = torch.arange(n, device=x0.device)
    scale = 1.0 + overshoot
    classes = original = None
    for step in range(max_iter + 1):
        need_grad = step < max_iter
        x = (x0[active] + scale * r_total[active]).requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            logits = model(x)
        if classes is None:
            k = min(candidates, logits.shape[1])
            classes = logits.detach().topk(k, dim=1).indices       # (B, k), column 0 = prediction
            original = classes[:, 0]
        moved = logits.detach().argmax(1) != original[active]
        flipped[active[moved]] = True
        if not need_grad or moved.all() or classes.shape[1] < 2:
            break
        z = logits.gather(1, classes[active])
        f = z[:, 1:] - z[:, :1]                                      # (b, k-1), negative until flipped
        grads = [torch.autograd.grad(f[:, j].sum(), x, retain_graph=j < f.shape[1] - 1)[0]
                 for j in range(f.shape[1])]
        w = torch.stack(grads, 1)                                    # (b, k-1, ...)
        w_norm = w.flatten(2).norm(dim=2)                            # (b, k-1)
        f = f.detach().abs()
        nearest = (f / w_norm).nan_to_num(nan=float("inf")).argmin(1)
        rows = torch.arange(len(x), device=x.device)
        f_l, norm_l, w_l = f[rows, nearest], w_norm[rows, nearest], w[rows, nearest]
        stuck = ~moved & (norm_l <= 1e-12)
        stalled[active[stuck]] = True
        go = ~moved & ~stuck
        step_size = ((f_l + 1e-4) / norm_l.clamp_min(1e-12) ** 2)[go]
        r_total[active[go]] += step_size.view(-1, *[1] * (x0.dim() - 1)) * w_l[go]
        active = active[go]
        if len(active) == 0:
            break
    perturbation = scale * r_total
    distance = perturbation.flatten(1).norm(dim=1)
    distance[stalled] = float("inf")
    return Attack(perturbation, distance, flipped)


def last_layer_margin(logits: np.ndarray, weight: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Feature-space distance to the nearest boundary of a linear head around the prediction.

    logits: (N, C) (a memory map is fine), weight: (C, D); rows: the rows of ``logits`` to measure
    (default all) -> (len(rows),) min_{k != pred} (z_pred - z_k) / ||w_pred - w_k||. Read in row blocks
    of about 32 MB; ||w_pred - w_k|| comes from the predicted class's row of the head alone
    (||w_p||^2 + ||w_k||^2 - 2 w_p.w_k), so memory is O(block x C), never C x C x D.
    """
    weight = np.asarray(weight, dtype=np.float64)
    sq_norm = (weight ** 2).sum(axis=1)                                      # (C,)
    rows = np.arange(len(logits)) if rows is None else np.asarray(rows)
    out = np.empty(len(rows), np.float64)
    for block in curator.row_slices(len(rows), logits.shape[1]):
        z = np.asarray(logits[rows[block]], dtype=np.float64)                # (B, C)
        at = np.arange(len(z))
        pred = z.argmax(1)
        gap = z[at, pred][:, None] - z
        pair_sq = sq_norm[pred][:, None] + sq_norm[None, :] - 2.0 * (weight[pred] @ weight.T)
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = gap / np.sqrt(np.maximum(pair_sq, 0.0))
        dist[at, pred] = np.inf
        out[block] = np.nan_to_num(dist, nan=np.inf).min(1)
    return out


def closeness_rank(distance: np.ndarray) -> np.ndarray:
    """(N,) distances -> (N,) rank fraction in (0, 1]: 1 for the smallest distance, ties averaged."""
    n = len(distance)
    order = np.argsort(distance, kind="stable")
    rank = np.empty(n, np.float64)
    rank[order] = np.arange(n)
    _, inverse, counts = np.unique(distance, return_inverse=True, return_counts=True)
    mean_rank = np.bincount(inverse, weights=rank) / counts
    return ((n - mean_rank[inverse]) / n).astype(np.float32)


def attack_copy(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of ``model`` computing the same function, cheaper to differentiate: batch norm
    folded into the preceding convolutions where torch.fx can trace the model, channels-last memory."""
    try:
        from torch.fx.experimental.optimization import fuse

        model = fuse(model.eval())
    except Exception:  # not symbolically traceable: attack the model as it is
        pass
    return model.to(memory_format=torch.channels_last).requires_grad_(False)


def check_options(options) -> None:
    for key, low in (("max_iter", 1), ("candidates", 2), ("batch_size", 1), ("subset", 0)):
        value = options[key]
        if key == "subset" and value is None:
            continue
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise curator.ConfigError(f"[scorers.adversarial_distance] {key} = {value!r}: "
                                      f"must be an integer >= {low}")
    overshoot = options["overshoot"]
    if isinstance(overshoot, bool) or not isinstance(overshoot, (int, float)) or not 0.0 <= overshoot < 1.0:
        raise curator.ConfigError(f"[scorers.adversarial_distance] overshoot = {overshoot!r}: "
                                  "must be a number in [0, 1)")


def _options(ctx: curator.ScoreContext) -> dict:
    opts = {**DEFAULTS, **dict(ctx.options)}
    if opts["subset"] is None:
        opts["subset"] = 0 if ctx.device.type == "cuda" else CPU_SUBSET
    return opts


def _deepfool_subset(ctx: curator.ScoreContext, subset: int) -> np.ndarray:
    """(N,) bool: the examples DeepFool runs on (all, or a seeded random ``subset`` of them)."""
    n = ctx.n_examples
    chosen = np.ones(n, bool)
    if 0 < subset < n:
        chosen[:] = False
        chosen[np.random.default_rng(ctx.seed).choice(n, subset, replace=False)] = True
    return chosen


def deepfool_rows(ctx: curator.ScoreContext, rows: np.ndarray) -> dict[str, np.ndarray]:
    """DeepFool distances of examples ``rows`` (R,) on their out-of-fold proxies; NaN for rows
    outside the DeepFool subset (``finish`` fills them in)."""
    opts = _options(ctx)
    rows = np.asarray(rows, dtype=np.int64)
    rows_in_subset = rows[_deepfool_subset(ctx, opts["subset"])[rows]]
    folds = ctx.folds[rows_in_subset]
    distance = np.full(len(rows), np.nan)
    batches = [(fold, idx[start:start + opts["batch_size"]])
               for fold in np.unique(folds)
               for idx in [rows_in_subset[folds == fold]]
               for start in range(0, len(idx), opts["batch_size"])]
    models = {fold: attack_copy(ctx.load_model(int(fold))) for fold in np.unique(folds)}
    for fold, idx in ctx.progress(batches, desc="adversarial_distance", total=len(batches), unit="batch"):
        x = ctx.inputs(idx)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        attack = deepfool(models[fold], x, max_iter=opts["max_iter"], overshoot=float(opts["overshoot"]),
                          candidates=opts["candidates"])
        distance[np.searchsorted(rows, idx)] = attack.distance.double().cpu().numpy()
    return {"distance": distance}


def rank_distances(ctx: curator.ScoreContext, parts) -> dict[str, np.ndarray]:
    """The columns from every example's DeepFool distance (NaN outside the subset): the closeness
    rank, and the free last-layer margin column."""
    opts = _options(ctx)
    n, folds = ctx.n_examples, ctx.folds
    margin = np.empty(n, np.float64)
    for fold in np.unique(folds):
        rows = np.flatnonzero(folds == fold)
        head = ctx.load_model(int(fold)).head.weight.detach().cpu().numpy()
        margin[rows] = last_layer_margin(ctx.oof_logits, head, rows)          # (N, C) read in row blocks
    distance = np.array(parts["distance"], dtype=np.float64)
    chosen = _deepfool_subset(ctx, opts["subset"])
    if not chosen.all():
        # The others: their free margin, quantile-mapped onto the DeepFool distances of the subset.
        below = np.searchsorted(np.sort(margin[chosen]), margin[~chosen], side="right")
        distance[~chosen] = np.sort(distance[chosen])[np.clip(below - 1, 0, int(chosen.sum()) - 1)]
    finite = distance[np.isfinite(distance)]
    far = float(finite.max()) if len(finite) else 1.0        # an immovable example: as far as the farthest
    log_distance = np.log(np.clip(np.where(np.isfinite(distance), distance, far), 1e-12, None))
    return {
        "adversarial_distance": closeness_rank(distance),
        "adversarial_distance_log": (-log_distance).astype(np.float32),
        "adversarial_distance_margin": np.maximum(-margin, np.finfo(np.float32).min).astype(np.float32),
    }


SCORER = curator.Scorer(
    name="adversarial_distance",
    issue=("outlier",),
    extra_issues={"adversarial_distance_log": ("outlier",)},
    requires=("model", "inputs", "oof"),
    score_rows=deepfool_rows,
    finish=rank_distances,
    description="rank of the DeepFool L2 distance to the out-of-fold model's decision boundary (small = worse)",
    options=dict(DEFAULTS),
    check_options=check_options,
)


@curator.hookimpl
def register_scorers(register):
    register(SCORER)
