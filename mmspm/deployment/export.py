"""Exporting a model as an ONNX file (:func:`export_onnx`), on a torch new
enough for it (:func:`check_export_torch`).

What is exported (``tools/deployment/pytorch2onnx.py``, docs/deploy.md):

- an mmpretrain classifier: ``input`` -> ``logits`` (B, num_classes), before
  the softmax;
- an mmseg encoder-decoder (Semantic FPN): ``input`` -> ``logits``
  (B, num_classes, H, W), the decode head's logits resized to the input as
  mmseg's inference resizes them; with ``argmax``, ``labels`` (B, H, W) instead;
- an mmdet Mask R-CNN: ``input`` (batch 1) -> ``boxes`` (N, 4: x1, y1, x2, y2
  in input pixels), ``scores`` (N), ``labels`` (N, int64), ``masks``
  (N, 28, 28: the mask head's probabilities of each detection's class, to be
  pasted into the image by :func:`paste_masks`), as mmdet's ``predict``
  computes them (:class:`DetectorWrapper`), with ONNX's ``RoiAlign`` and
  ``NonMaxSuppression``.

``input`` is the preprocessed image batch: float32, NCHW, in the channel
order and normalisation of the config's data preprocessor
(:func:`mmspm.analysis.load_image` makes it), as mmdeploy's graphs take it.
Batch (fixed at 1 for the detector), height and width are symbolic in the
graph. The graph is captured by
``torch.export`` (``torch.onnx.export(dynamo=True)``), so the SPM layers take
their loop-free path (:func:`mmspm.models.spm.select_path`) and one graph
serves every size; it holds standard ONNX operators only, without sequence
operators, so that TensorRT's ONNX parser can read it (:func:`check_graph`).
"""
import re
from typing import Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.utils import digit_version
from torch import nn

from .detector import DetectorWrapper
from .models import task_of
from .onnx_file import INPUT_DIMS, METADATA, check_graph
from .wrappers import ExportWrapper

# The default ONNX opset: the newest the exporter of every supported torch
# writes, and what TensorRT 10 parses.
OPSET = 18

# torch.onnx.export(dynamo=True) of an ExportedProgram, the torch.export-based
# exporter, is torch 2.6's; torch 2.1-2.5 have other exporters, which
# specialise the sizes SPM computes with.
EXPORT_TORCH = '2.6'


def check_export_torch() -> None:
    """Check that torch is new enough for :func:`export_onnx`.

    Raises:
        RuntimeError: Naming the torch that :func:`export_onnx` needs, on an
            older one.
    """
    if digit_version(torch.__version__) < digit_version(EXPORT_TORCH):
        raise RuntimeError(f'ONNX export needs torch >= {EXPORT_TORCH} (its torch.export-based '
                           f'exporter); this environment has torch {torch.__version__}. '
                           f'Export from an environment with a newer torch (make install '
                           f'does one); the ONNX file runs anywhere.')


def export_onnx(model: nn.Module, out: str, shape: Sequence[int] = (224, 224),
                argmax: bool = False, opset: int = OPSET,
                cfg: Optional[Config] = None) -> nn.Module:
    """Write ``model`` as an ONNX file ``out`` and return the exported wrapper.

    The wrapper is :class:`DetectorWrapper` for a Mask R-CNN (captured at a
    ``1 x 3 x shape`` input, batch fixed at 1), :class:`ExportWrapper`
    otherwise (captured at ``2 x 3 x shape``, batch symbolic); height and
    width are symbolic (named as :data:`INPUT_DIMS`; the detector's outputs'
    first axis is ``detections``). The file's metadata (:data:`METADATA`)
    records the task and, given ``cfg``, the config's text, so that
    ``tools/deployment/onnx_demo.py`` needs the file alone.

    ``torch.export`` captures the graph itself (non-strict), so that a size
    it cannot keep symbolic is an error here rather than the silently
    size-specialised graph of the ONNX exporter's fallbacks.

    Args:
        model (nn.Module): A model of :func:`task_of`'s tasks.
        out (str): The path of the ONNX file.
        shape (Sequence[int]): The height and width of the capture input.
            Default: (224, 224).
        argmax (bool): Segmentors only (``ValueError`` for a detector): see
            :class:`ExportWrapper`. Default: False.
        opset (int): The ONNX opset. Default: :data:`OPSET` (18).
        cfg (Config | None): The model's config, recorded in the file's
            metadata. Default: None.

    Returns:
        nn.Module: The exported wrapper.
    """
    task = task_of(model)
    check_export_torch()
    if task == 'detector':
        if argmax:
            raise ValueError('argmax applies to segmentors only; a detector '
                             'exports boxes, scores, labels and masks.')
        wrapper = DetectorWrapper(model.eval()).eval()
        x = torch.randn(1, 3, *shape)
        axes = (2, 3)
    else:
        wrapper = ExportWrapper(model.eval(), argmax).eval()
        # Batch 2: dynamo would take an example size of 1 for a constant.
        x = torch.randn(2, 3, *shape)
        axes = (0, 2, 3)
    dims = {i: torch.export.Dim.DYNAMIC for i in axes}
    with torch.no_grad():
        program = torch.export.export(wrapper, (x,), dynamic_shapes=(dims,), strict=False)
        onnx_program = torch.onnx.export(
            program, input_names=['input'], output_names=wrapper.output_names,
            opset_version=opset, dynamo=True, optimize=True, verbose=False)
    onnx_program.save(out)
    user_input = program.graph_signature.user_inputs[0]
    symbols = next(n for n in program.graph.nodes
                   if n.op == 'placeholder' and n.name == user_input).meta['val'].shape
    names = {str(symbols[i]): INPUT_DIMS[i if i < 2 else i - 1] for i in axes}
    metadata = {METADATA['task']: task}
    if cfg is not None:
        metadata[METADATA['config']] = cfg.pretty_text
    _finish_file(out, names, metadata, detections=task == 'detector')
    check_graph(out)
    return wrapper


def _finish_file(path: str, names: dict, metadata: dict, detections: bool) -> None:
    """Rename the symbolic sizes ``names`` maps (the exporter's s0, s1, ...)
    in every shape the ONNX file at ``path`` declares, name the outputs'
    first axis ``detections`` if ``detections`` (the exporter writes an
    expression of its own symbols), and add ``metadata`` to the file's
    ``metadata_props``."""
    import onnx
    model = onnx.load(path)
    pattern = re.compile(r'\b(' + '|'.join(map(re.escape, names)) + r')\b')
    graph = model.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: names[m[1]], dim.dim_param)
    if detections:
        for value in graph.output:
            value.type.tensor_type.shape.dim[0].dim_param = 'detections'
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        **metadata})
    onnx.save(model, path)
