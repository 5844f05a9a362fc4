"""curator: find mislabeled, outlier and spurious-correlation examples, and retrain on the cleaned set.

    import curator
    run = curator.score("dataset/")          # a Run; run.scores is a pandas DataFrame
"""

from importlib import import_module

__version__ = "0.1.0"

from .errors import ConfigError, CuratorError, DatasetError, PluginError, RunError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .scorer import ARTIFACTS, ISSUES, Scorer  # noqa: E402

# Names that pull in torch are imported on first use, so commands that never train
# (export, report, apply, plugins) start quickly.
_LAZY = {"Checkpoint": ".context", "Dynamics": ".context", "ScoreContext": ".context", "score": ".scoring",
         "load_scorers": ".plugins", "Run": ".store", "Examples": ".data", "load_dataset": ".data"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'curator' has no attribute {name!r}")


__all__ = ["ARTIFACTS", "Checkpoint", "ConfigError", "CuratorError", "DatasetError", "Dynamics", "Examples",
           "ISSUES", "PluginError", "Run", "RunError", "ScoreContext", "Scorer", "hookimpl", "load_dataset",
           "load_scorers", "score"]
