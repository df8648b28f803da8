"""Model registry and the stage view. Importing this package registers every arch and family."""
from elimnet.extensions import import_package_modules
from elimnet.models.registry import (ArchSpec, check_arch, create_model, get_spec, has_model, list_models,
                                     register_family, register_model, unregister_family)
from elimnet.models.staged import StagedNet, StageView, count_layers, count_params, stage_view

# Every module of this package is imported: each family file registers its archs, so a new family is a new module.
import_package_modules(__name__, __path__)

__all__ = ["ArchSpec", "StagedNet", "StageView", "check_arch", "count_layers", "count_params", "create_model",
           "get_spec", "has_model", "list_models", "register_family", "register_model", "stage_view",
           "unregister_family"]
