"""ONNX export of mmspm's models, and running the exported graphs (docs/deploy.md).

One module a job: :mod:`.models` loads the model to export, :mod:`.wrappers`
and :mod:`.detector` make its graph (classifier or segmentor; Mask R-CNN, and
the pasting of its masks), :mod:`.export` writes the ONNX file (its docstring
describes the graph), :mod:`.onnx_file` reads the file's metadata and checks
it for TensorRT, :mod:`.runtime` runs it in onnxruntime.
"""
from .detector import DETECTOR_OUTPUTS, DetectorWrapper, paste_masks
from .export import EXPORT_TORCH, OPSET, check_export_torch, export_onnx
from .models import TASKS, load_model, task_of
from .onnx_file import INPUT_DIMS, METADATA, SEQUENCE_OPS, check_graph, read_metadata
from .runtime import onnxruntime_outputs, run_onnxruntime
from .wrappers import ExportWrapper, IntegerUpsample

__all__ = [
    'DETECTOR_OUTPUTS', 'EXPORT_TORCH', 'INPUT_DIMS', 'METADATA', 'OPSET', 'SEQUENCE_OPS',
    'TASKS', 'DetectorWrapper', 'ExportWrapper', 'IntegerUpsample', 'check_export_torch',
    'check_graph', 'export_onnx', 'load_model', 'onnxruntime_outputs', 'paste_masks',
    'read_metadata', 'run_onnxruntime', 'task_of'
]
