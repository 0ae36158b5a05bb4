"""Swin checkpoints in the layout of mmdet's and mmpretrain's Swin (they share
their parameter names): the Swin authors' release files converted as mmdet
converts them, and relative position bias tables of another window size
resized as mmdet resizes them."""
import re
from collections import OrderedDict

import torch.nn.functional as F
from mmdet.models.backbones.swin import swin_converter
from torch import Tensor

# Buffers every Swin model computes from its window size and input size; the
# authors' checkpoints hold them (`attn_mask` of the shifted blocks,
# `relative_position_index`), mmdet's and mmpretrain's the index.
RECOMPUTED_KEY = re.compile(r'(^|\.)(attn_mask|relative_position_index)$')
BIAS_TABLE_KEY = re.compile(r'(^|\.)relative_position_bias_table$')


def is_authors_layout(state: 'OrderedDict[str, Tensor]') -> bool:
    """Whether ``state`` is a Swin authors' state dict, not mmdet's.

    The authors' is that of ``models/swin_transformer.py`` of
    microsoft/Swin-Transformer.

    Args:
        state (OrderedDict[str, Tensor]): The state dict.

    Returns:
        bool: True for the authors' layout.
    """
    return 'patch_embed.proj.weight' in state


def final_norm_as_output_norm(state: 'OrderedDict[str, Tensor]',
                              num_stages: int) -> 'OrderedDict[str, Tensor]':
    """A final ``norm`` as the norm of the last stage's output.

    The final ``norm`` (the Swin authors', mmcls 0.x's) is renamed
    ``norm{num_stages-1}``, as mmpretrain's Swin renames it when it loads
    such a checkpoint.

    Args:
        state (OrderedDict[str, Tensor]): The state dict.
        num_stages (int): The number of stages.

    Returns:
        OrderedDict[str, Tensor]: The renamed state dict.
    """
    return OrderedDict((re.sub(r'^norm\.', f'norm{num_stages - 1}.', k), v)
                       for k, v in state.items())


def from_authors_layout(state: 'OrderedDict[str, Tensor]',
                        num_stages: int) -> 'OrderedDict[str, Tensor]':
    """The Swin authors' state dict in mmdet's keys.

    Converted by mmdet's ``swin_converter`` (which drops their classifier
    ``head``), the final norm as the last output norm
    (:func:`final_norm_as_output_norm`).

    Args:
        state (OrderedDict[str, Tensor]): The authors' state dict.
        num_stages (int): The number of stages.

    Returns:
        OrderedDict[str, Tensor]: The state dict in mmdet's keys.
    """
    converted = OrderedDict((k[len('backbone.'):], v) for k, v in swin_converter(state).items())
    return final_norm_as_output_norm(converted, num_stages)


def resize_bias_table(table: Tensor, length: int) -> Tensor:
    """A relative position bias table resized to ``length`` rows.

    Resized bicubically over its ``(2w-1) x (2w-1)`` grid, as mmdet's and
    mmseg's ``SwinTransformer.init_weights`` resize it for another window
    size. (mmpretrain's ``resize_relative_position_bias_table`` calls
    ``scipy.interpolate.interp2d``, removed in SciPy 1.14, so it cannot serve
    mmpretrain's SPM-Swin either.)

    Args:
        table (Tensor): The table, ``((2w-1)^2, heads)``.
        length (int): The number of rows of the resized table.

    Returns:
        Tensor: The resized table, ``(length, heads)``.
    """
    old, heads = table.shape
    src, dst = round(old**0.5), round(length**0.5)
    grid = table.permute(1, 0).reshape(1, heads, src, src)
    resized = F.interpolate(grid.float(), size=(dst, dst), mode='bicubic')
    return resized.view(heads, length).permute(1, 0).contiguous().to(table.dtype)


def fit_bias_tables(own: dict, state: 'OrderedDict[str, Tensor]') -> list[str]:
    """Resize, in place, the bias tables of ``state`` of another window size.

    Resized are the tables whose window size differs from the model's, with
    as many heads. Tables of another head count are left for the shape check
    to refuse.

    Args:
        own (dict): The model's state dict.
        state (OrderedDict[str, Tensor]): The checkpoint's state dict.

    Returns:
        list[str]: The keys resized.
    """
    resized = []
    for k, v in state.items():
        if BIAS_TABLE_KEY.search(k) and k in own and v.shape != own[k].shape:
            if v.dim() == 2 and v.shape[1] == own[k].shape[1]:
                state[k] = resize_bias_table(v, own[k].shape[0])
                resized.append(k)
    return resized
