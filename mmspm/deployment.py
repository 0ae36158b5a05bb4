"""ONNX export of mmspm's models, and running the exported graphs.

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
import importlib
import re
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.utils import digit_version
from torch import Tensor, nn

from .builder import build_model
from .safe_load import CheckpointError, load_checkpoint, unwrap

# The default ONNX opset: the newest the exporter of every supported torch
# writes, and what TensorRT 10 parses.
OPSET = 18
# The keys of the exported files' metadata_props (:func:`read_metadata`).
METADATA = dict(task='mmspm.task', config='mmspm.config')
# The symbolic dimensions of ``input`` by name.
INPUT_DIMS = ('batch', 'height', 'width')
# Sequence operators: TensorRT's parser has none of them.
SEQUENCE_OPS = frozenset({'SequenceAt', 'SequenceConstruct', 'SequenceEmpty',
                          'SequenceErase', 'SequenceInsert', 'SequenceLength',
                          'SequenceMap', 'SplitToSequence', 'ConcatFromSequence'})


# (task, module, class) of the models :func:`task_of` knows.
TASKS = (('classifier', 'mmpretrain.models', 'ImageClassifier'),
         ('segmentor', 'mmseg.models', 'EncoderDecoder'),
         ('detector', 'mmdet.models', 'MaskRCNN'))
# The detector graph's outputs.
DETECTOR_OUTPUTS = ('boxes', 'scores', 'labels', 'masks')


def task_of(model: nn.Module) -> str:
    """The export task of ``model``.

    Args:
        model (nn.Module): The model.

    Returns:
        str: 'classifier' (mmpretrain ``ImageClassifier``), 'segmentor'
        (mmseg ``EncoderDecoder``) or 'detector' (mmdet ``MaskRCNN``).

    Raises:
        ValueError: A clear error for any other model.
    """
    for task, module, name in TASKS:
        try:
            cls = getattr(importlib.import_module(module), name)
        except ImportError:
            continue
        if isinstance(model, cls):
            return task
    raise ValueError(
        f'ONNX export covers mmpretrain image classifiers, mmseg encoder-decoders '
        f'(Semantic FPN) and mmdet Mask R-CNN; got a {type(model).__name__}, which is '
        f'not supported (docs/deploy.md lists what is exported).')


def load_model(cfg: Config, checkpoint: Optional[str] = None) -> nn.Module:
    """The config's whole model in eval mode with SyncBN made BN.

    Args:
        cfg (Config): The config.
        checkpoint (str | None): The weights: a checkpoint trained with this
            config, read without unpickling code; every tensor of the model
            must be in it. None: the model's own initialisation (the
            backbone's pretrained checkpoint, if the config names one, is not
            read). Default: None.

    Returns:
        nn.Module: The model.

    Raises:
        CheckpointError: If ``checkpoint`` does not fit the model.
    """
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
    """mmseg's ``Upsample`` by an integer ``scale_factor``, its output size in integers.

    For Semantic FPN's scale heads: the output size is computed as ``t * s``
    rather than mmseg's ``int(t * float(s))``, the same number, which
    ``torch.export`` would fix at the capture size.

    Args:
        factor (int): The integer scale factor.
        mode (str): The interpolation mode, as ``F.interpolate``'s.
        align_corners (bool | None): As ``F.interpolate``'s.
    """

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
    """``input`` -> the first output of the exported graph.

    The graph is described in the module's docstring; for a model of
    :func:`task_of`'s tasks.

    Args:
        model (nn.Module): An mmpretrain ``ImageClassifier`` or mmseg
            ``EncoderDecoder`` (whose integer-factor ``Upsample`` layers are
            replaced, in place, by the equal :class:`IntegerUpsample`). A
            Mask R-CNN raises ``ValueError``: :class:`DetectorWrapper`
            exports it.
        argmax (bool): Segmentors only (``ValueError`` for a classifier):
            output the per-pixel class (int64) instead of the logits.
            Default: False.
    """

    def __init__(self, model: nn.Module, argmax: bool = False) -> None:
        super().__init__()
        self.task = task_of(model)
        if self.task == 'detector':
            raise ValueError('A Mask R-CNN is exported by DetectorWrapper '
                             '(export_onnx picks the wrapper by the model).')
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


def _offset_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou: float,
                span: Union[int, torch.SymInt]) -> Tensor:
    """Indices of ``boxes`` (x1, y1, x2, y2) kept by NMS within each group
    (class or level), by decreasing score: mmcv's ``batched_nms`` offset trick
    (each group shifted by ``span``, more than any coordinate, so that boxes
    of two groups never overlap), exported as one ONNX ``NonMaxSuppression``.
    mmcv offsets by the largest coordinate + 1; ``span`` is the image's
    larger side + 1 (boxes are clipped to the image), which needs no
    reduction over a possibly empty tensor."""
    import torchvision
    shifted = boxes + (groups.to(boxes.dtype) * span)[:, None]
    return torchvision.ops.nms(shifted, scores, iou)


def _roi_features(extractor: nn.Module, feats: Sequence[Tensor], boxes: Tensor) -> Tensor:
    """mmdet's ``SingleRoIExtractor`` on ``boxes`` (N, 4) of image 0: each box
    pooled from the level ``map_roi_levels`` assigns it, by torchvision's
    ``roi_align`` (mmcv's ``RoIAlign`` with ``aligned=True``, exported as
    ONNX's ``RoiAlign`` in 'half_pixel' mode). Every level pools every box
    and ``Where`` picks, rather than mmdet's split of the boxes by level and
    scatter back (more gathers and scatters of data-dependent sizes)."""
    import torchvision
    rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], 1)
    levels = extractor.map_roi_levels(rois, len(extractor.featmap_strides))
    out = None
    for i, layer in enumerate(extractor.roi_layers):
        pooled = torchvision.ops.roi_align(feats[i], rois, layer.output_size,
                                           layer.spatial_scale, layer.sampling_ratio,
                                           layer.aligned)
        out = pooled if out is None else torch.where(
            (levels == i)[:, None, None, None], pooled, out)
    return out


def _check_detector(model: nn.Module) -> None:
    """Raise ValueError unless ``model`` is the Mask R-CNN
    :class:`DetectorWrapper` reproduces: RPNHead with sigmoid scores, a
    standard RoI head with a mask head, RoIAlign extractors, plain NMS."""
    from mmdet.models.dense_heads import RPNHead
    from mmdet.models.roi_heads import SingleRoIExtractor, StandardRoIHead
    cfg = model.test_cfg
    problems = []
    if type(model.rpn_head) is not RPNHead or not model.rpn_head.use_sigmoid_cls:
        problems.append(f'rpn_head is a {type(model.rpn_head).__name__} '
                        f'(supported: RPNHead with sigmoid scores)')
    if type(model.roi_head) is not StandardRoIHead or not model.roi_head.with_mask:
        problems.append(f'roi_head is a {type(model.roi_head).__name__} '
                        f'(supported: StandardRoIHead with a mask head)')
    else:
        roi = model.roi_head
        for name in ('bbox_roi_extractor', 'mask_roi_extractor'):
            extractor = getattr(roi, name)
            layer = extractor.roi_layers[0]
            if (type(extractor) is not SingleRoIExtractor
                    or type(layer).__name__ != 'RoIAlign' or layer.pool_mode != 'avg'):
                problems.append(f'{name} is not a SingleRoIExtractor of average RoIAlign')
        if roi.with_shared_head:
            problems.append('roi_head has a shared head')
    for stage in ('rpn', 'rcnn'):
        nms = cfg[stage].get('nms', {})
        if nms.get('type', 'nms') != 'nms':
            problems.append(f'test_cfg.{stage}.nms is {nms.get("type")!r} (supported: nms)')
    if problems:
        raise ValueError(f'Mask R-CNN export does not cover this model: '
                         f'{"; ".join(problems)}.')


class DetectorWrapper(nn.Module):
    """``input`` (1, 3, H, W) -> (``boxes``, ``scores``, ``labels``, ``masks``).

    mmdet's Mask R-CNN ``predict`` (with ``rescale``, in the coordinates of
    ``input``) in tensor operations only, with the model's ``test_cfg``: the
    RPN keeps the ``nms_pre`` best anchors of each level,
    decodes them, drops boxes no wider/taller than ``min_bbox_size``, runs
    NMS per level and keeps ``max_per_img`` proposals; the box head scores
    and decodes them per class, keeps scores above ``score_thr``, runs NMS
    per class and keeps ``max_per_img`` detections by score; the mask head
    gives each detection the 28x28 sigmoid probabilities of its class
    (:func:`paste_masks` pastes and thresholds them at ``mask_thr_binary``).

    Args:
        model (nn.Module): An mmdet ``MaskRCNN`` (:func:`_check_detector`
            says which heads are covered; ``ValueError`` for another model).
    """

    output_names = list(DETECTOR_OUTPUTS)

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if task_of(model) != 'detector':
            raise ValueError(f'DetectorWrapper takes an mmdet MaskRCNN, not a '
                             f'{type(model).__name__}.')
        _check_detector(model)
        self.model = model

    def proposals(self, feats: Sequence[Tensor], h: Union[int, torch.SymInt],
                  w: Union[int, torch.SymInt]) -> Tensor:
        """The RPN's proposals of image 0, by decreasing score.

        Args:
            feats (Sequence[Tensor]): The feature maps of the neck.
            h (int | torch.SymInt): The height of image 0.
            w (int | torch.SymInt): The width of image 0.

        Returns:
            Tensor: The proposals (P, 4).
        """
        rpn, cfg = self.model.rpn_head, self.model.test_cfg.rpn
        cls_scores, bbox_preds = rpn(feats)
        priors = rpn.prior_generator.grid_priors([c.shape[-2:] for c in cls_scores],
                                                 device=feats[0].device)
        boxes, scores, levels = [], [], []
        for level, (cls, reg, prior) in enumerate(zip(cls_scores, bbox_preds, priors)):
            score = cls[0].permute(1, 2, 0).reshape(-1).sigmoid()
            nms_pre = cfg.get('nms_pre', -1)
            # mmdet sorts and keeps the first nms_pre: top-k of the same size.
            k = score.shape[0] if nms_pre <= 0 else torch.sym_min(nms_pre, score.shape[0])
            score, index = score.topk(k)
            deltas = reg[0].permute(1, 2, 0).reshape(-1, rpn.bbox_coder.encode_size)
            boxes.append(rpn.bbox_coder.decode(prior[index], deltas[index], max_shape=(h, w)))
            scores.append(score)
            levels.append(torch.full_like(index, level))
        boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        if cfg.get('min_bbox_size', -1) >= 0:
            valid = ((boxes[:, 2] - boxes[:, 0] > cfg.min_bbox_size)
                     & (boxes[:, 3] - boxes[:, 1] > cfg.min_bbox_size))
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        keep = _offset_nms(boxes, scores, levels, cfg.nms.iou_threshold,
                           torch.sym_max(h, w) + 1)
        return boxes[keep[:cfg.max_per_img]]

    def forward(self, input: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # noqa: A002
        h, w = input.shape[2], input.shape[3]
        roi, cfg = self.model.roi_head, self.model.test_cfg.rcnn
        feats = self.model.extract_feat(input)
        proposals = self.proposals(feats, h, w)
        feats = feats[:roi.bbox_roi_extractor.num_inputs]
        cls_score, deltas = roi.bbox_head(_roi_features(roi.bbox_roi_extractor, feats,
                                                        proposals))
        scores = cls_score.softmax(-1)[:, :-1]
        num, classes = scores.shape
        coder = roi.bbox_head.bbox_coder
        if roi.bbox_head.reg_class_agnostic:
            boxes = coder.decode(proposals, deltas, max_shape=(h, w))
            boxes = boxes[:, None].expand(num, classes, 4)
        else:
            boxes = coder.decode(proposals.repeat_interleave(classes, 0),
                                 deltas.reshape(-1, coder.encode_size), max_shape=(h, w))
        # mmdet's multiclass_nms: (box, class) pairs above score_thr, NMS per class.
        boxes, scores = boxes.reshape(-1, 4), scores.reshape(-1)
        labels = torch.arange(classes, device=input.device).repeat(num)
        valid = scores > cfg.score_thr
        boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        keep = _offset_nms(boxes, scores, labels, cfg.nms.iou_threshold,
                           torch.sym_max(h, w) + 1)
        if cfg.max_per_img > 0:
            keep = keep[:cfg.max_per_img]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        masks = roi.mask_head(_roi_features(
            roi.mask_roi_extractor, feats[:roi.mask_roi_extractor.num_inputs], boxes))
        masks = masks[:, 0] if roi.mask_head.class_agnostic else \
            masks[torch.arange(masks.shape[0], device=input.device), labels]
        return boxes, scores, labels, masks.sigmoid()


def paste_masks(masks: Union[Tensor, np.ndarray], boxes: Union[Tensor, np.ndarray],
                size: Sequence[int], threshold: float = 0.5) -> Tensor:
    """Paste the detector graph's ``masks`` into an image and threshold them.

    Done by mmdet's own ``_do_paste_mask``.

    Args:
        masks (Tensor | np.ndarray): The detector graph's ``masks``
            (N, 28, 28).
        boxes (Tensor | np.ndarray): Where to paste them (N, 4, in the
            image's pixels).
        size (Sequence[int]): The image's size (h, w).
        threshold (float): Masks are ``>= threshold`` (mmdet's
            ``mask_thr_binary``). Default: 0.5.

    Returns:
        Tensor: (N, h, w) bool, as mmdet's ``predict`` returns them.
    """
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    masks, boxes = torch.as_tensor(masks).float(), torch.as_tensor(boxes).float()
    if masks.shape[0] == 0:
        return torch.zeros(0, *size, dtype=torch.bool)
    pasted, _ = _do_paste_mask(masks[:, None], boxes, size[0], size[1], skip_empty=False)
    return pasted >= threshold


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


def read_metadata(path: str) -> dict:
    """The mmspm metadata of the ONNX file at ``path`` (see :func:`export_onnx`).

    Args:
        path (str): The ONNX file.

    Returns:
        dict: ``{'task': ..., 'config': Config or None}``.

    Raises:
        ValueError: If the file was not written by mmspm's export.
    """
    import onnx
    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    if METADATA['task'] not in props:
        raise ValueError(f'{path} was not written by mmspm\'s export (no '
                         f'{METADATA["task"]} in its metadata); export it with '
                         f'tools/deployment/pytorch2onnx.py.')
    text = props.get(METADATA['config'])
    return dict(task=props[METADATA['task']],
                config=Config.fromstring(text, '.py') if text else None)


def check_graph(path: str) -> dict:
    """Check the ONNX file at ``path`` as TensorRT's parser needs it.

    Standard operators only (the default domain), no sequence operators, no
    local functions; ``input``'s batch, height and width symbolic (batch 1 in
    a detector's graph, which its metadata names).

    Args:
        path (str): The ONNX file.

    Returns:
        dict: ``{'ops': sorted operator types, 'input_dims': the input's
        dimensions}``.

    Raises:
        ValueError: Naming what is wrong.
    """
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
        props = {p.key: p.value for p in model.metadata_props}
        batch_ok = (dims[:1] == [1] if props.get(METADATA['task']) == 'detector'
                    else dims[:1] and isinstance(dims[0], str))
        if len(dims) != 4 or not batch_ok or any(not isinstance(d, str) for d in dims[2:]):
            problems.append(f'input dimensions {dims} are not symbolic in batch '
                            f'(1 for a detector), height and width')
    if problems:
        raise ValueError(f'{path}: {"; ".join(problems)}.')
    return dict(ops=sorted({n.op_type for n in nodes}), input_dims=dims)


def run_onnxruntime(path: str, x: Tensor) -> np.ndarray:
    """The first output of the ONNX file at ``path`` for input ``x``.

    Run on onnxruntime's CPU provider.

    Args:
        path (str): The ONNX file.
        x (Tensor): The input.

    Returns:
        np.ndarray: The first output.
    """
    return onnxruntime_outputs(path, x)[0]


def onnxruntime_outputs(path: str, x: Tensor) -> list[np.ndarray]:
    """All outputs of the ONNX file at ``path`` for input ``x``.

    Run on onnxruntime's CPU provider.

    Args:
        path (str): The ONNX file.
        x (Tensor): The input.

    Returns:
        list[np.ndarray]: The outputs, in the graph's order.
    """
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(None, {'input': x.numpy()})
