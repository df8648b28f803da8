"""Model registry and the stage view. Importing this package registers every arch."""
from elimnet.models.registry import ArchSpec, create_model, get_spec, list_models, register_model
from elimnet.models.staged import StagedNet, StageView, count_layers, count_params, stage_view

# Family files register themselves on import.
from elimnet.models import (efficientnet, efficientnet_lite, mnasnet, mobilenet, rednet,  # noqa: E402,F401
                            resnet, simple_effnet, vgg)

__all__ = ["ArchSpec", "StagedNet", "StageView", "count_layers", "count_params", "create_model",
           "get_spec", "list_models", "register_model", "stage_view"]
