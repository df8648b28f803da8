"""Data sources, the deterministic split, and the uint8 tensor cache."""
from elimnet.data.sources import Sample, SourceData, list_sources, load_source, register_source
from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches

# Sources register themselves on import.
from elimnet.data import elpv, fashion_mnist, folder, imagenette, taco  # noqa: E402,F401

__all__ = ["Normalizer", "Sample", "SourceData", "TensorSplit", "iterate_batches", "list_sources",
           "load_source", "register_source"]
