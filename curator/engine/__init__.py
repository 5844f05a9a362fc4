"""Proxy models, cross-fitted training with a dynamics recorder, and the artifacts they leave."""

from .models import ModelSpec, build_model
from .training import TrainConfig, TrainResult, train_cross_fitted

__all__ = ["ModelSpec", "TrainConfig", "TrainResult", "build_model", "train_cross_fitted"]
