"""Train the final model on the curated data: ``erm``, ``clean``, ``reweight``, ``jtt``, ``mat`` (and the
``groupdro`` oracle when true groups are known), select it on validation worst-group accuracy, and report
it side by side with ERM trained on the same budget.

    from curator.retrain import retrain
    result = retrain("dataset/", run="runs/x", method="mat", eval="test/")
    result.metrics["results"]["mat"]["worst_group_accuracy"]

The pieces are usable alone: :func:`fit` (the training loop), :func:`predict_logits`,
:func:`accuracy_report`, and :class:`Retrainer`, which loads the data once and trains any method on it.
Modules: ``config`` (settings, no torch), ``loop``, ``evaluation``, ``data``, ``methods``, ``command``.
Names from the torch-using modules are imported on first use.
"""

from ..lazy import lazy_getattr
from .config import HOLDOUTS, METHODS, SELECTIONS, Hyper, RetrainConfig

_LAZY = {"TensorBank": ".loop", "Fitted": ".loop", "fit": ".loop", "predict_logits": ".loop",
         "accuracy_report": ".evaluation", "inferred_groups": ".evaluation",
         "EvalSet": ".data", "read_applied_reviews": ".data",
         "MethodResult": ".methods", "Retrainer": ".methods",
         "RetrainResult": ".command", "default_out": ".command", "retrain": ".command", "load_model": ".command"}
__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["HOLDOUTS", "METHODS", "SELECTIONS", "Hyper", "RetrainConfig", *_LAZY]
