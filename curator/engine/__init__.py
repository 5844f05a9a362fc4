"""Proxy models, cross-fitted training with a dynamics recorder, and the artifacts they leave."""

from .config import TrainConfig
from .folds import ArtifactSink, FoldJob, train_fold
from .models import ModelSpec, build_model
from .training import TrainResult, train_cross_fitted

__all__ = ["ArtifactSink", "FoldJob", "ModelSpec", "TrainConfig", "TrainResult", "build_model", "train_cross_fitted",
           "train_fold"]
