"""Train the final model on the curated data: ``erm``, ``clean``, ``reweight``, ``relabel``, ``jtt``, ``mat``
(and the ``groupdro`` oracle when true groups are known), select it on validation worst-group accuracy (true
groups and inferred groups side by side), and report it beside ERM trained on the same model and budget.

    from curator.retrain import retrain
    result = retrain("dataset/", run="runs/x", method="mat", eval="test/")
    result.metrics["results"]["mat"]["worst_group_accuracy"]

The pieces are usable alone: :func:`fit` (the training loop), :func:`predict_logits`,
:func:`accuracy_report`, and :class:`Retrainer`, which loads the data once and trains any method on it.
Modules: ``config`` (settings, no torch), ``models`` (the final architectures), ``augment``, ``loop``,
``mat`` (the shift), ``holdout`` (held-out models), ``evaluation``, ``data``, ``methods``, ``command``.
Names from the torch-using modules are imported on first use.
"""

from ..lazy import lazy_getattr
from .config import AUGMENTS, HOLDOUTS, METHODS, MODELS, SELECTIONS, Hyper, RetrainConfig

_LAZY = {"TensorBank": ".loop", "Fitted": ".loop", "fit": ".loop", "predict_logits": ".loop",
         "accuracy_report": ".evaluation", "inferred_groups": ".evaluation",
         "EvalSet": ".data", "read_applied_reviews": ".data",
         "FinalModelSpec": ".models", "build_final_model": ".models",
         "MethodResult": ".methods", "Retrainer": ".methods",
         "RetrainResult": ".command", "default_out": ".command", "retrain": ".command", "load_model": ".command"}
__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["AUGMENTS", "HOLDOUTS", "METHODS", "MODELS", "SELECTIONS", "Hyper", "RetrainConfig", *_LAZY]
