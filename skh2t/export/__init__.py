"""Deploy a fitted Head2Toe model: a compact torch module, TorchScript and ONNX files.

:func:`compact_module` turns a fitted :class:`~skh2t.Head2ToeClassifier` (or a
``Pipeline`` of the transformer and a linear classifier) into one
``torch.nn.Module`` that computes only what the head reads;
:func:`export_model` writes it as TorchScript (``.pt``) or ONNX (``.onnx``,
with the ``skh2t[export]`` extra); :func:`inference_cost` and
:func:`measure_latency` say what it costs per image. See :ref:`deploy` in the
user guide.
"""

from skh2t.export.build import compact_module
from skh2t.export.cost import InferenceCost, inference_cost, measure_latency
from skh2t.export.files import (
    FORMATS,
    ONNX_OPSET,
    check_export_path,
    check_opset,
    export_model,
    load_exported,
    metadata,
    onnx_opsets,
    read_metadata,
)
from skh2t.export.module import CompactHead2Toe, TapReadout, prepare_images

__all__ = [
    "FORMATS",
    "ONNX_OPSET",
    "CompactHead2Toe",
    "InferenceCost",
    "TapReadout",
    "check_export_path",
    "check_opset",
    "compact_module",
    "export_model",
    "inference_cost",
    "load_exported",
    "measure_latency",
    "metadata",
    "onnx_opsets",
    "prepare_images",
    "read_metadata",
]
