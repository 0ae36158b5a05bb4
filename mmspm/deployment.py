"""ONNX export of mmspm's models, and running the exported graphs.

What is exported (``tools/deployment/pytorch2onnx.py``, docs/deploy.md):

- an mmpretrain classifier: ``input`` -> ``logits`` (B, num_classes), before
  the softmax;
- an mmseg encoder-decoder (Semantic FPN): ``input`` -> ``logits``
  (B, num_classes, H, W), the decode head's logits resized to the input as
  mmseg's inference resizes them; with ``argmax``, ``labels`` (B, H, W) instead.

``input`` is the preprocessed image batch: float32, NCHW, in the channel
order and normalisation of the config's data preprocessor
(:func:`mmspm.analysis.load_image` makes it), as mmdeploy's graphs take it.
Batch, height and width are symbolic in the graph. The graph is captured by
``torch.export`` (``torch.onnx.export(dynamo=True)``), so the SPM layers take
their loop-free path (:func:`mmspm.models.spm.select_path`) and one graph
serves every size; it holds standard ONNX operators only, without sequence
operators, so that TensorRT's ONNX parser can read it (:func:`check_graph`).
"""
import importlib
import re
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import Tensor, nn

from .builder import build_model
from .safe_load import CheckpointError, load_checkpoint, unwrap

# The default ONNX opset: the newest the exporter of every supported torch
# writes, and what TensorRT 10 parses.
OPSET = 18
# The symbolic dimensions of ``input`` by name.
INPUT_DIMS = ('batch', 'height', 'width')
# Sequence operators: TensorRT's parser has none of them.
SEQUENCE_OPS = frozenset({'SequenceAt', 'SequenceConstruct', 'SequenceEmpty',
                          'SequenceErase', 'SequenceInsert', 'SequenceLength',
                          'SequenceMap', 'SplitToSequence', 'ConcatFromSequence'})


def task_of(model: nn.Module) -> str:
    """'classifier' (mmpretrain ``ImageClassifier``) or 'segmentor' (mmseg
    ``EncoderDecoder``); a clear error for any other model."""
    kinds = (('classifier', 'mmpretrain.models', 'ImageClassifier'),
             ('segmentor', 'mmseg.models', 'EncoderDecoder'))
    for task, module, name in kinds:
        try:
            cls = getattr(importlib.import_module(module), name)
        except ImportError:
            continue
        if isinstance(model, cls):
            return task
    raise ValueError(
        f'ONNX export covers mmpretrain image classifiers and mmseg '
        f'encoder-decoders (Semantic FPN); got a {type(model).__name__}. Mask '
        f'R-CNN export is not implemented (docs/deploy.md says why).')


def load_model(cfg: Config, checkpoint: Optional[str] = None) -> nn.Module:
    """The config's whole model in eval mode with SyncBN made BN, with the
    weights of ``checkpoint`` (one trained with this config, read without
    unpickling code; every tensor of the model must be in it), or its own
    initialisation when ``checkpoint`` is None (the backbone's pretrained
    checkpoint, if the config names one, is not read)."""
    model = build_model(cfg, init_weights=checkpoint is None)
    if checkpoint is not None:
        state = unwrap(load_checkpoint(checkpoint))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f'{checkpoint!r} does not fit the model of the config: missing '
                f'{missing[:6]}, unexpected {unexpected[:6]}. Pass a checkpoint '
                f'trained with this config (convert the SPM authors\' checkpoints '
                f'with tools/model_converters/spm2mmspm.py first).')
    return model.eval()


class IntegerUpsample(nn.Module):
    """mmseg's ``Upsample`` by an integer ``scale_factor`` (Semantic FPN's
    scale heads), its output size computed in integers: ``t * s`` rather than
    mmseg's ``int(t * float(s))``, the same number, which ``torch.export``
    would fix at the capture size."""

    def __init__(self, factor: int, mode: str, align_corners: Optional[bool]) -> None:
        super().__init__()
        self.factor = factor
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[2] * self.factor, x.shape[3] * self.factor)
        return F.interpolate(x, size=size, mode=self.mode, align_corners=self.align_corners)


def _integer_upsampling(model: nn.Module) -> None:
    """Replace, in place, mmseg's integer-factor ``Upsample`` layers of
    ``model`` by :class:`IntegerUpsample`."""
    from mmseg.models.utils import Upsample
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, Upsample) and not child.size
                    and isinstance(child.scale_factor, float)
                    and child.scale_factor.is_integer()):
                setattr(parent, name, IntegerUpsample(int(child.scale_factor), child.mode,
                                                      child.align_corners))


class ExportWrapper(nn.Module):
    """``input`` -> the first output of the exported graph (see the module's
    docstring), for a model of :func:`task_of`'s tasks.

    Args:
        model: An mmpretrain ``ImageClassifier`` or mmseg ``EncoderDecoder``
            (whose integer-factor ``Upsample`` layers are replaced, in place,
            by the equal :class:`IntegerUpsample`).
        argmax: Segmentors only: output the per-pixel class (int64) instead
            of the logits. Default False.
    """

    def __init__(self, model: nn.Module, argmax: bool = False) -> None:
        super().__init__()
        self.task = task_of(model)
        if argmax and self.task != 'segmentor':
            raise ValueError('argmax applies to segmentors only; a classifier '
                             'exports its logits.')
        if self.task == 'segmentor':
            _integer_upsampling(model)
        self.model = model
        self.argmax = argmax

    @property
    def output_names(self) -> list[str]:
        return ['labels' if self.argmax else 'logits']

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 (the graph input's name)
        out = self.model(input, mode='tensor')
        if self.task == 'classifier':
            return out
        # mmseg's inference resizes the decode head's 1/4-scale logits to the input.
        out = F.interpolate(out, size=input.shape[2:], mode='bilinear',
                            align_corners=self.model.align_corners)
        return out.argmax(1) if self.argmax else out


def export_onnx(model: nn.Module, out: str, shape: Sequence[int] = (224, 224),
                argmax: bool = False, opset: int = OPSET) -> ExportWrapper:
    """Write ``model`` (see :class:`ExportWrapper`) as an ONNX file ``out``,
    captured at a ``2 x 3 x shape`` input (default 224x224) with symbolic
    batch, height and width (named as :data:`INPUT_DIMS`); returns the
    exported wrapper.

    ``torch.export`` captures the graph itself (non-strict), so that a size
    it cannot keep symbolic is an error here rather than the silently
    size-specialised graph of the ONNX exporter's fallbacks.
    """
    wrapper = ExportWrapper(model.eval(), argmax).eval()
    # Batch 2: dynamo would take an example size of 1 for a constant.
    x = torch.randn(2, 3, *shape)
    dims = {i: torch.export.Dim.DYNAMIC for i in (0, 2, 3)}
    with torch.no_grad():
        program = torch.export.export(wrapper, (x,), dynamic_shapes=(dims,), strict=False)
        onnx_program = torch.onnx.export(
            program, input_names=['input'], output_names=wrapper.output_names,
            opset_version=opset, dynamo=True, optimize=True, verbose=False)
    onnx_program.save(out)
    symbols = next(n for n in program.graph.nodes if n.op == 'placeholder'
                   and n.name not in program.graph_signature.inputs_to_parameters
                   and n.name not in program.graph_signature.inputs_to_buffers).meta['val'].shape
    _rename_dims(out, {str(symbols[i]): name for i, name in zip((0, 2, 3), INPUT_DIMS)})
    check_graph(out)
    return wrapper


def _rename_dims(path: str, names: dict) -> None:
    """Rename the symbolic sizes ``names`` maps (the exporter's s0, s1, ...)
    in every shape the ONNX file at ``path`` declares."""
    import onnx
    model = onnx.load(path)
    pattern = re.compile(r'\b(' + '|'.join(map(re.escape, names)) + r')\b')
    graph = model.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: names[m[1]], dim.dim_param)
    onnx.save(model, path)


def check_graph(path: str) -> dict:
    """Check the ONNX file at ``path`` as TensorRT's parser needs it: standard
    operators only (the default domain), no sequence operators, no local
    functions; ``input``'s batch, height and width symbolic. Returns
    ``{'ops': sorted operator types, 'input_dims': the input's dimensions}``;
    raises ValueError naming what is wrong."""
    import onnx
    model = onnx.load(path, load_external_data=False)
    graph = model.graph
    nodes = list(graph.node)
    foreign = sorted({f'{n.domain}::{n.op_type}' for n in nodes
                      if n.domain not in ('', 'ai.onnx')})
    sequence = sorted({n.op_type for n in nodes if n.op_type in SEQUENCE_OPS})
    problems = []
    if foreign:
        problems.append(f'non-standard operators {foreign}')
    if sequence:
        problems.append(f'sequence operators {sequence}')
    if model.functions:
        problems.append(f'local functions {[f.name for f in model.functions]}')
    inputs = {i.name: i for i in graph.input}
    if 'input' not in inputs:
        problems.append(f'no graph input named input (found {sorted(inputs)})')
        dims = []
    else:
        dims = [d.dim_param or d.dim_value
                for d in inputs['input'].type.tensor_type.shape.dim]
        if len(dims) != 4 or any(not isinstance(d, str) for d in (dims[0], *dims[2:])):
            problems.append(f'input dimensions {dims} are not symbolic in batch, '
                            f'height and width')
    if problems:
        raise ValueError(f'{path}: {"; ".join(problems)}.')
    return dict(ops=sorted({n.op_type for n in nodes}), input_dims=dims)


def run_onnxruntime(path: str, x: Tensor) -> np.ndarray:
    """The first output of the ONNX file at ``path`` for input ``x``, run on
    onnxruntime's CPU provider."""
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(None, {'input': x.numpy()})[0]
