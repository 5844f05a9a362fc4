"""The ``local`` backend: the folds train one after another in this process, on its device, and every
scorer runs whole in this process."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..engine import folds as fold_training
from ..engine.folds import ArtifactSink, FoldJob
from ..engine.inputs import InputBank
from .base import Backend


class LocalBackend(Backend):
    name = "local"

    def train_folds(self, todo: Sequence[int], job: FoldJob, sink: ArtifactSink,
                    progress: Callable[..., object] | None) -> Iterator[dict]:
        if not todo:
            return
        # Results go straight into the driver's memory maps: nothing is held per fold.
        bank = InputBank(job.inputs, job.normalizer, self.fold_device)
        y_all = torch.as_tensor(np.array(job.labels, dtype=np.int64), device=self.fold_device)
        for k in todo:          # looked up on the module, where the resume tests wrap it
            yield fold_training.train_fold(k, job.folds, job.config, job.spec, bank, y_all, self.fold_device, sink,
                                       progress)
