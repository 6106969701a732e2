"""Models under training: the adapter protocol, MC dropout, the built-in CNN, and one spec
(``resolve_model``) for every way to bring a model (docs/models.md).

torch is imported inside functions, so importing this package stays cheap.
"""

from curator.models.base import (
    InputSpec,
    ModelAdapter,
    Predictions,
    ScriptAdapter,
    TorchAdapter,
    default_device,
    images_to_tensor,
    mc_dropout,
)
from curator.models.check import check_model
from curator.models.cnn import CNNAdapter, SmallCNN, load_classifier, train_classifier
from curator.models.spec import ModelSpec, resolve_model
from curator.models.spec import available as available_models
from curator.models.spec import register as register_model
from curator.models.spec import unregister as unregister_model

__all__ = [
    "ModelAdapter",
    "Predictions",
    "TorchAdapter",
    "ScriptAdapter",
    "InputSpec",
    "ModelSpec",
    "resolve_model",
    "check_model",
    "register_model",
    "unregister_model",
    "available_models",
    "CNNAdapter",
    "SmallCNN",
    "mc_dropout",
    "images_to_tensor",
    "default_device",
    "train_classifier",
    "load_classifier",
]
