"""curator: find mislabeled, outlier and spurious-correlation examples, and retrain on the cleaned set.

    import curator
    run = curator.score("dataset/")          # a Run; run.scores is a pandas DataFrame
"""

__version__ = "0.1.0"

from .context import Checkpoint, Dynamics, ScoreContext  # noqa: E402
from .errors import ConfigError, CuratorError, DatasetError, PluginError, RunError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .plugins import load_scorers  # noqa: E402
from .scorer import ARTIFACTS, ISSUES, Scorer  # noqa: E402
from .scoring import score  # noqa: E402
from .store import Run  # noqa: E402
from .data import Examples, load_dataset  # noqa: E402

__all__ = ["ARTIFACTS", "Checkpoint", "ConfigError", "CuratorError", "DatasetError", "Dynamics", "Examples",
           "ISSUES", "PluginError", "Run", "RunError", "ScoreContext", "Scorer", "hookimpl", "load_dataset",
           "load_scorers", "score"]
