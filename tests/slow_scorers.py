"""Module-level scorers (so they pickle into a worker process) for the deadline tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

import curator


def _hang(ctx):
    Path(ctx.options["pid_file"]).write_text(str(os.getpid()))
    time.sleep(600)
    return np.zeros(ctx.n_examples)


HANGS = curator.Scorer(name="hangs_in_worker", issue="outlier", requires=(), score=_hang,
                       options={"pid_file": ""})


@curator.hookimpl
def register_scorers(register):
    register(HANGS)
