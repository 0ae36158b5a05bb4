"""The export graph of a Mask R-CNN: mmdet's ``predict`` in tensor operations
(:class:`DetectorWrapper`), and the pasting of its masks into the image
(:func:`paste_masks`)."""
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from .models import task_of

# The detector graph's outputs.
DETECTOR_OUTPUTS = ('boxes', 'scores', 'labels', 'masks')


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
