"""self_influence: TracIn self-influence (Pruthi et al. 2020).

TracIn's self-influence of a training example x is the sum, over the training steps t that read x, of
lr_t * ||grad_w loss(w_t, x)||^2 (softmax cross-entropy on the given label), for the model that
trained on x (fold ``trained_by[x]``). An example the model has to bend itself to fit (a flipped
label, a freak) keeps a large gradient for longer, so high = suspicious; mainly a mislabel signal.

Modes (``[scorers.self_influence] mode``):
- ``"steps"`` (default): TracIn itself, for the final linear layer (weights and bias), at the very
  steps that trained on x: the proxies record ||grad||^2 and the step's learning rate for every
  example while they train (``dynamics.head_grad_sq``, ``dynamics.step_lr``), so scoring costs no
  forward pass. With p = softmax(z) and h the penultimate features, grad = (p - e_y) outer [h, 1],
  so ||grad||^2 = ||p - e_y||^2 * (||h||^2 + 1) in closed form (train mode: batch norm on the batch,
  as the step saw it).
- ``"last_layer"``: TracIn-CP, the paper's checkpoint approximation: the sum over the saved
  checkpoints i (every epoch) of lr_i (the epoch's mean learning rate) * the same closed form at
  w_i; one eval-mode forward pass per checkpoint (on 60k Fashion-MNIST about as long as training).
- ``"all"``: TracIn-CP over every trainable parameter, from per-sample gradients (``torch.func`` vmap
  of grad), computed in chunks so memory stays bounded. Far slower: a backward pass per example per
  checkpoint, about 20x the last-layer time on CPU; meant for small models and datasets.

Other option: ``batch_size`` (default 2048), examples per forward pass.

Shardable: an example's score needs only its own gradients, so ``score_rows`` scores any subset of
rows and ``--backend ray`` spreads them over shard tasks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

import curator

MODES = ("steps", "last_layer", "all")
# Per-sample gradients held at once in ``all`` mode: chunk * n_parameters float32 stays under this.
GRAD_BUDGET_BYTES = 256 * 2**20


def last_layer_sq_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||grad of cross-entropy w.r.t. (head.weight, head.bias)||^2 per example, (B,) float32.

    x: (B, ...) normalised inputs, y: (B,) int64 labels, on the model's device.
    """
    with torch.no_grad():
        if x.dim() == 4:
            # Channels-last convolutions are markedly faster, on CPU (about 1.7x here) as on GPU.
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        logits, h = model.forward_features(x)
        residual = F.softmax(logits.float(), dim=1)
        residual[torch.arange(len(y), device=y.device), y] -= 1.0           # p - e_y
        return residual.pow(2).sum(1) * (h.float().pow(2).sum(1) + 1.0)


def full_sq_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """||grad of cross-entropy w.r.t. every trainable parameter||^2 per example, (B,) float32.

    Parameters with ``requires_grad=False`` are held fixed and left out of the norm. The model
    should be in eval mode (batch norm uses its running statistics, so examples stay independent).
    """
    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    fixed = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    fixed.update(dict(model.named_buffers()))
    if chunk is None:
        n_params = sum(p.numel() for p in trainable.values())
        chunk = max(1, GRAD_BUDGET_BYTES // (4 * max(1, n_params)))

    def loss(params, xi, yi):
        logits = functional_call(model, (params, fixed), (xi.unsqueeze(0),))
        return F.cross_entropy(logits.float(), yi.unsqueeze(0))

    def sq_norm(xi, yi):
        return sum(g.pow(2).sum() for g in grad(loss)(trainable, xi, yi).values())

    per_example = vmap(sq_norm)
    return torch.cat([per_example(x[s:s + chunk], y[s:s + chunk]) for s in range(0, len(x), chunk)])


OPTIONS = {"mode": "steps", "batch_size": 2048}


def check_options(options) -> None:
    if options["mode"] not in MODES:
        raise curator.ConfigError(f"[scorers.self_influence] mode = {options['mode']!r}: expected one of "
                                  f"{', '.join(repr(m) for m in MODES)}")
    batch_size = options["batch_size"]
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise curator.ConfigError(f"[scorers.self_influence] batch_size = {batch_size!r}: must be a positive integer")


def self_influence_rows(ctx: curator.ScoreContext, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The self-influence of examples ``rows`` (R,): each row needs only its own gradients."""
    options = {**OPTIONS, **ctx.options}
    mode, batch_size = options["mode"], options["batch_size"]
    rows = np.asarray(rows, dtype=np.int64)
    if mode == "steps":
        dynamics = ctx.dynamics
        steps = np.asarray(dynamics.step_lr[:, rows], np.float64) * dynamics.head_grad_sq[:, rows]   # (E, R)
        return {"self_influence": steps.sum(axis=0).astype(np.float32)}
    sq_norms = last_layer_sq_norms if mode == "last_layer" else full_sq_norms

    score = np.zeros(len(rows), np.float64)
    labels = torch.as_tensor(np.array(ctx.labels), dtype=torch.long)
    trained_by = ctx.trained_by[rows]
    checkpoints = ctx.checkpoints
    for ckpt in ctx.progress(checkpoints, desc=f"self_influence ({mode})", total=len(checkpoints), unit="checkpoint"):
        model = ctx.load_model(ckpt.fold, ckpt.epoch)
        seen = np.flatnonzero(trained_by == ckpt.fold)           # in-sample: this model trained on them
        for start in range(0, len(seen), batch_size):
            at = seen[start:start + batch_size]
            index = rows[at]
            norms = sq_norms(model, ctx.inputs(index), labels[index].to(ctx.device))
            score[at] += ckpt.lr * norms.double().cpu().numpy()
    return {"self_influence": score.astype(np.float32)}


SCORER = curator.Scorer(
    name="self_influence",
    issue=("mislabeled",),
    requires=("dynamics", "checkpoints", "model", "inputs"),
    score_rows=self_influence_rows,
    description="TracIn self-influence: sum over the steps that trained on it of lr * ||loss gradient||^2 "
                "(last layer; or over checkpoints, last layer or all)",
    options=OPTIONS,
    check_options=check_options,
)


@curator.hookimpl
def register_scorers(register):
    register(SCORER)
