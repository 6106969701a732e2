"""Models under training: the adapter protocol, MC dropout and the built-in CNN.

torch is imported inside functions, so importing this package stays cheap.
"""

from curator.models.base import (
    ModelAdapter,
    Predictions,
    TorchAdapter,
    default_device,
    images_to_tensor,
    mc_dropout,
)
from curator.models.cnn import CNNAdapter, SmallCNN, load_classifier, train_classifier

__all__ = [
    "ModelAdapter",
    "Predictions",
    "TorchAdapter",
    "CNNAdapter",
    "SmallCNN",
    "mc_dropout",
    "images_to_tensor",
    "default_device",
    "train_classifier",
    "load_classifier",
]
