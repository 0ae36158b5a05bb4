"""What the analysis tools measure in a backbone, model-agnostic where it can be.

- :func:`backbone_token` / :func:`display_name`: a config's backbone as the
  paper names it (``spm-pvt-t`` / ``SPM-PVT-T``); with :func:`name_token`
  (the same from a config's name), the key that
  ``tools/analysis/collect_results.py`` matches runs with the metafiles by.
- :func:`build_backbone`: a config's backbone returning every stage as an NCHW
  map, with the weights of any checkpoint mmspm reads (safely).
- :func:`load_image`: an image as the config's data preprocessor feeds it.
- :func:`effective_receptive_field` and :func:`contribution_square`: the
  effective receptive field of Luo et al. (2016) as the paper shows it.
- :func:`attention_probs`: the attention weights of one PVT block.
"""
import inspect
import os.path as osp
from typing import Callable, Iterable, Optional

import mmcv
import numpy as np
import torch
from mmdet.models.backbones import PyramidVisionTransformer
from mmengine.config import Config
from torch import Tensor, nn

from .builder import build_model, model_config
from .models import SPMPVT
from .models.families import FAMILIES, family_of
from .models.spm_variants import VARIANT_ARGS, variant_token
from .safe_load import CheckpointError, backbone_of, load_checkpoint, unwrap

# Words of config-name tokens as papers write them (the families' own below).
_WORDS = {'spm': 'SPM', **{f.token: f.display for f in FAMILIES}}


def _arguments(cfg: dict) -> dict:
    """The backbone's arguments: the config's over the class's defaults."""
    from mmdet.registry import MODELS  # every backbone mmspm names is registered there
    cls = MODELS.get(cfg['type'])
    if cls is None:
        return dict(cfg)
    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **cfg}


def backbone_token(cfg: dict) -> str:
    """The OpenMMLab config-name token of a backbone config.

    Args:
        cfg (dict): The backbone config.

    Returns:
        str: E.g. ``spm-pvt-t``, ``pvtv2-b1``, ``swin-t`` (for the backbones
        of :data:`FAMILIES`); the type name (lower case) for any other
        backbone.
    """
    try:
        family, kind = family_of(cfg['type'])
    except KeyError:
        return cfg['type'].split('.')[-1].lower()
    prefix = 'spm-' if kind == 'spm' else ''
    args = _arguments(cfg)
    # An SPM ablation variant (configs/imagenet/ablations) is a backbone of its own.
    variant = variant_token(**{k: v for k, v in args.items() if k in VARIANT_ARGS}) \
        if kind == 'spm' else ''
    return f'{prefix}{family.token}-{family.size(args)}{variant}'


def name_token(config_name: str) -> str:
    """The backbone token of a config named in OpenMMLab's convention.

    Args:
        config_name (str): ``mask-rcnn_<backbone>_fpn_...``,
            ``fpn_<backbone>_...`` or ``<backbone>_...``.

    Returns:
        str: The ``<backbone>`` part.
    """
    parts = config_name.split('_')
    return parts[1] if parts[0] in ('mask-rcnn', 'fpn') else parts[0]


def display_name(token: str) -> str:
    """A backbone token as the paper names it.

    ``spm-pvt-t`` -> ``SPM-PVT-T``, ``pvtv2-b1`` -> ``PVTv2-B1``.

    Args:
        token (str): The backbone token.

    Returns:
        str: The display name.
    """
    return '-'.join(_WORDS.get(w, w.upper()) for w in token.split('-'))


def build_backbone(cfg: Config, checkpoint: Optional[str] = None) -> nn.Module:
    """The config's backbone in eval mode, every stage returned as an NCHW map.

    SPM-PVT classifiers are built dense; their cls token is not used.

    Args:
        cfg (Config): The config.
        checkpoint (str | None): The weights: the checkpoint's backbone
            tensors (a classifier, detector or segmentor checkpoint, a bare
            backbone state dict, or any layout the backbone's
            ``load_pretrained`` reads), read without unpickling code. None:
            the backbone's own initialisation. Default: None.

    Returns:
        nn.Module: The backbone.

    Raises:
        CheckpointError: If the checkpoint does not fit the backbone.
    """
    backbone_cfg = dict(cfg.model.backbone, init_cfg=None, out_indices=(0, 1, 2, 3))
    if backbone_cfg['type'].split('.')[-1] == 'SPMPVT':
        backbone_cfg['with_cls_token'] = False
    backbone = build_model(cfg, backbone_cfg, init_weights=True)
    if checkpoint is not None:
        if hasattr(backbone, 'load_pretrained'):  # SPM backbones: every layout they know
            backbone.load_pretrained(checkpoint)
        else:
            state = backbone_of(unwrap(load_checkpoint(checkpoint)))
            missing, unexpected = backbone.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise CheckpointError(
                    f'{checkpoint!r} does not fit the backbone of the config '
                    f'({backbone_cfg["type"]}): missing {missing[:6]}, unexpected '
                    f'{unexpected[:6]}; pass the checkpoint trained with this config.')
    return backbone.eval()


def normalisation(cfg: Config) -> tuple[list[float], list[float], bool]:
    """The normalisation of the config's data preprocessor.

    Args:
        cfg (Config): The config.

    Returns:
        tuple[list[float], list[float], bool]: (mean, std, rgb); rgb says
        whether the model sees RGB (``bgr_to_rgb``/``to_rgb``) rather than
        BGR.
    """
    pre = model_config(cfg).get('data_preprocessor') or {}
    mean = list(pre.get('mean', (123.675, 116.28, 103.53)))
    std = list(pre.get('std', (58.395, 57.12, 57.375)))
    return mean, std, bool(pre.get('bgr_to_rgb', pre.get('to_rgb', True)))


def load_image(path: str, size: tuple[int, int], cfg: Config) -> tuple[np.ndarray, Tensor]:
    """The image at ``path`` resized to ``size``.

    Args:
        path (str): The image file.
        size (tuple[int, int]): (h, w).
        cfg (Config): The config whose data preprocessor normalises it.

    Returns:
        tuple[np.ndarray, Tensor]: The image as RGB uint8 for drawing, and as
        the model's normalised ``(1, 3, h, w)`` input.
    """
    rgb = mmcv.imresize(mmcv.imread(path, channel_order='rgb'), size[::-1])
    mean, std, model_rgb = normalisation(cfg)
    x = torch.from_numpy(rgb if model_rgb else rgb[..., ::-1].copy()).float()
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return rgb, x.permute(2, 0, 1)[None].contiguous()


def effective_receptive_field(stage: Callable[[Tensor], Tensor],
                              images: Iterable[Tensor]) -> np.ndarray:
    """Luo et al.'s effective receptive field.

    The absolute gradient of the centre of ``stage(x)`` (an NCHW map, summed
    over its channels) with respect to the input, summed over the input
    channels and over ``images``.

    Args:
        stage (Callable[[Tensor], Tensor]): Maps an input to an NCHW map.
        images (Iterable[Tensor]): Each ``(1, C, H, W)``, all of one size;
            at least one, else ``ValueError`` is raised.

    Returns:
        np.ndarray: ``(H, W)``, float64.
    """
    total = None
    for x in images:
        x = x.detach().clone().requires_grad_(True)
        out = stage(x)
        centre = out[:, :, out.shape[2] // 2, out.shape[3] // 2].sum()
        grad, = torch.autograd.grad(centre, x)
        contribution = grad.abs().sum((0, 1)).double().numpy()
        total = contribution if total is None else total + contribution
    if total is None:
        raise ValueError('effective_receptive_field needs at least one image.')
    return total


def contribution_square(erf: np.ndarray, fraction: float) -> int:
    """The side of the smallest centred square holding ``fraction`` of the contribution.

    RepLKNet's measure of an ERF's size: the square is centred on the map's
    centre; odd sides, cut at the map's border.

    Args:
        erf (np.ndarray): The effective receptive field, ``(H, W)``.
        fraction (float): The fraction of the total contribution, in (0, 1]
            (else ``ValueError`` is raised).

    Returns:
        int: The side in pixels.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f'fraction must be in (0, 1], got {fraction}.')
    h, w = erf.shape
    total = erf.sum()
    cy, cx = h // 2, w // 2
    for r in range(max(h, w)):
        inside = erf[max(cy - r, 0):cy + r + 1, max(cx - r, 0):cx + r + 1].sum()
        if inside >= fraction * total * (1 - 1e-12):
            return 2 * r + 1
    return 2 * max(h, w) - 1


def attention_module(backbone: nn.Module, stage: int, block: int) -> nn.Module:
    """The attention of ``block`` in ``stage``.

    Args:
        backbone (nn.Module): SPM-PVT, or mmdet's PVT / PVTv2 (and
            SPM-PVTv2); ``ValueError`` for another backbone.
        stage (int): The stage, from 0.
        block (int): The block, from 0; ``ValueError`` if it does not exist.

    Returns:
        nn.Module: The attention module.
    """
    if isinstance(backbone, SPMPVT):
        blocks = backbone.stages[stage]
    elif isinstance(backbone, PyramidVisionTransformer):
        # mmdet: (patch embedding, [position embedding,] blocks, norm) per stage
        blocks = [m for m in backbone.layers[stage][1] if hasattr(m, 'attn')]
    else:
        raise ValueError(f'{type(backbone).__name__} has no PVT attention; the '
                         f'attention maps are for SPM-PVT, PVT and PVTv2 backbones.')
    if not 0 <= block < len(blocks):
        raise ValueError(f'stage {stage + 1} has {len(blocks)} blocks; block '
                         f'{block + 1} does not exist.')
    return blocks[block].attn


def attention_probs(backbone: nn.Module, image: Tensor, stage: int,
                    block: int) -> tuple[Tensor, tuple[int, int], tuple[int, int]]:
    """The attention weights of ``block`` in ``stage`` for ``image``.

    The queries and keys are the ones the forward pass computes, taken by
    hooks, so padding and spatial reduction are the model's own.

    Args:
        backbone (nn.Module): As :func:`attention_module` takes it.
        image (Tensor): ``(1, 3, H, W)``.
        stage (int): The stage, from 0.
        block (int): The block, from 0.

    Returns:
        tuple[Tensor, tuple[int, int], tuple[int, int]]: The weights
        ``(heads, queries, keys)`` (every row sums to 1), the (h, w) grid of
        the queries and that of the keys.
    """
    attn = attention_module(backbone, stage, block)
    mha = getattr(attn, 'attn', None)  # mmdet's: torch's MultiheadAttention inside
    seen = {}

    def keep(name):
        def hook(module, args, out):
            seen[name] = out
        return hook

    def keep_grid(module, args, out):
        seen['grid'] = tuple(out.shape[2:])

    hooks = [attn.register_forward_pre_hook(lambda m, args: seen.update(hw=tuple(args[1])))]
    if attn.sr_ratio > 1:
        hooks.append(attn.sr.register_forward_hook(keep_grid))
    if isinstance(mha, nn.MultiheadAttention):
        hooks.append(mha.register_forward_pre_hook(
            lambda m, args, kwargs: seen.update(q=kwargs['query'], k=kwargs['key']),
            with_kwargs=True))
    else:
        hooks += [attn.q.register_forward_hook(keep('q')),
                  attn.kv.register_forward_hook(keep('kv'))]
    try:
        with torch.no_grad():
            backbone(image)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        if isinstance(mha, nn.MultiheadAttention):  # (tokens, batch, channels)
            _, probs = mha(seen['q'], seen['k'], seen['k'], need_weights=True,
                           average_attn_weights=False)
        else:  # SPM-PVT: softmax(q k^T / sqrt(d)), q and k as its forward made them
            h = attn.num_heads
            q = seen['q'].unflatten(-1, (h, -1)).transpose(1, 2)
            k = seen['kv'].unflatten(-1, (2, h, -1))[..., 0, :, :].transpose(1, 2)
            probs = (q @ k.transpose(-2, -1) * q.shape[-1]**-0.5).softmax(-1)
    return probs[0], seen['hw'], seen.get('grid', seen['hw'])


def load_models(specs: Iterable[list[str]]) -> list[tuple[str, Config, nn.Module]]:
    """Load the backbones the tools' ``--model`` arguments name.

    Args:
        specs (Iterable[list[str]]): ``[CONFIG]`` or ``[CONFIG, CHECKPOINT]``
            lists (the tools' ``--model`` arguments); another length raises
            ``SystemExit``.

    Returns:
        list[tuple[str, Config, nn.Module]]: (label, config, backbone from
        :func:`build_backbone`) per spec.
    """
    models = []
    for spec in specs:
        if len(spec) not in (1, 2):
            raise SystemExit(f'--model takes CONFIG [CHECKPOINT], got {spec}.')
        cfg = Config.fromfile(spec[0])
        checkpoint = spec[1] if len(spec) == 2 else None
        name = display_name(backbone_token(cfg.model.backbone))
        label = f'{name} ({osp.basename(checkpoint) if checkpoint else "untrained"})'
        models.append((label, cfg, build_backbone(cfg, checkpoint)))
    return models
