"""The export graph of a classifier or segmentor: :class:`ExportWrapper`, and
the :class:`IntegerUpsample` that keeps Semantic FPN's sizes symbolic."""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .models import task_of


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

    The graph is described in :mod:`mmspm.deployment.export`'s docstring;
    for a model of :func:`task_of`'s tasks.

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
