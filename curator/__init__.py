"""curator: find mislabeled, outlier and spurious-correlation examples, and retrain on the cleaned set.

    import curator
    run = curator.score("dataset/")          # a Run; run.scores is a pandas DataFrame
"""

__version__ = "0.1.0"

from .errors import ConfigError, CuratorError, DatasetError, PluginError, RunError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .lazy import lazy_getattr  # noqa: E402
from .adapter import Adapter, DatasetSettings  # noqa: E402
from .exporter import Exporter  # noqa: E402
from .scorer import ARTIFACTS, ISSUES, Scorer  # noqa: E402
from .blocks import row_slices  # noqa: E402

# Names that pull in torch are imported on first use, so commands that never train
# (export, report, apply, plugins) start quickly.
_LAZY = {"Checkpoint": ".context", "Dynamics": ".context", "ScoreContext": ".context", "score": ".scoring",
         "load_plugins": ".plugins", "Run": ".store", "Examples": ".data", "load_dataset": ".data",
         "Settings": ".settings"}
__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["ARTIFACTS", "Adapter", "Checkpoint", "ConfigError", "CuratorError", "DatasetError", "DatasetSettings",
           "Dynamics", "Examples", "Exporter", "ISSUES", "PluginError", "Run", "RunError", "ScoreContext", "Scorer",
           "Settings", "hookimpl", "load_dataset", "load_plugins", "row_slices", "score"]
