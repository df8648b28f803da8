"""Data sources, the deterministic split, and the uint8 tensor cache."""
from elimnet.data.sources import (Sample, SourceData, list_sources, load_source, register_source,
                                  unregister_source)
from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches
from elimnet.extensions import import_package_modules

# Every module of this package is imported: each source registers itself, so a new source is a new module.
import_package_modules(__name__, __path__)

__all__ = ["Normalizer", "Sample", "SourceData", "TensorSplit", "iterate_batches", "list_sources",
           "load_source", "register_source", "unregister_source"]
