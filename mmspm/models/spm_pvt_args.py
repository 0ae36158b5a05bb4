"""SPMPVT's architecture arguments: its own (``arch``) and those of mmdet's
``PyramidVisionTransformer`` (PVT v1), so that mmdet's PVT configs build
SPM-PVT with only ``type`` changed; mmdet's spellings of a checkpoint."""
import warnings
from typing import Optional, Sequence, Union

from .spm_backbone import InitCfg
from .spm_pvt_checkpoints import ARCH_DEPTHS

# Fields shared by all archs; depths differ (docs/reference_model.md).
_PVT_V1 = dict(
    embed_dims=(64, 128, 320, 512),
    num_heads=(1, 2, 5, 8),
    mlp_ratios=(8, 8, 4, 4),
    sr_ratios=(8, 4, 2, 1))
ARCH_SETTINGS = {name: dict(_PVT_V1, depths=depths) for name, depths in ARCH_DEPTHS.items()}

# Arguments of mmdet's PyramidVisionTransformer (PVT v1) that SPMPVT can only
# take at these values, and why.
FIXED_PVT_V1_ARGS = dict(
    num_stages=(4, 'SPM-PVT has four stages'),
    patch_sizes=((4, 2, 2, 2), 'stage 1 embeds 4x4 patches and stages 2-4 start with '
                 'Stepwise Patch Merging, which merges 2x2 windows'),
    strides=((4, 2, 2, 2), 'stage 1 embeds with stride 4 and Stepwise Patch Merging '
             'halves the map (stride 2)'),
    use_abs_pos_embed=(True, 'SPM-PVT adds a position embedding in every stage, as the '
                       'SPM reference does'),
    norm_after_stage=(False, 'SPM-PVT has no per-stage output norm (neither has PVT v1)'),
    use_conv_ffn=(False, "SPM-PVT's blocks have PVT v1's Linear MLP; a convolutional FFN "
                  'is PVTv2 (use SPMPVTv2)'),
)


class PVTArgumentError(ValueError, AssertionError):
    """An argument mmdet's ``PyramidVisionTransformer`` refuses with an
    assertion: a ValueError naming the problem, which code written for
    mmdet's PVT catches as the AssertionError it expects there."""


# Short arch names, as in the config names (spm-pvt-t, ...).
ARCH_ALIASES = dict(t='tiny', s='small', m='medium', l='large')


def check_fixed_args(**args) -> None:
    """ValueError naming the argument, for an mmdet PVT v1 argument at a
    value SPMPVT cannot honour (:data:`FIXED_PVT_V1_ARGS`)."""
    for name, value in args.items():
        possible, why = FIXED_PVT_V1_ARGS[name]
        if (tuple(value) if isinstance(value, (list, tuple)) else value) != possible:
            raise ValueError(f'SPMPVT: {name}={value!r} cannot be honoured: {why}; '
                             f'only {name}={possible!r} is possible.')


def check_paddings(paddings: Sequence[Union[int, str]],
                   spm_stages: Sequence[int]) -> tuple:
    """mmdet's ``paddings`` (one per patch embedding) as a tuple, refusing
    what SPMPVT cannot honour, naming why.

    The entries of the PVT v1 patch embeddings (stage 1's, and the merges
    that are not SPM) are theirs to honour; an SPM merge pads an odd map by
    itself at the bottom/right (giving ``ceil(H/2)``), which is 'corner', so
    its entry must be 0 (mmdet's default) or 'corner'.
    """
    if not isinstance(paddings, (list, tuple)) or len(paddings) != 4:
        raise ValueError(f'SPMPVT: paddings needs four entries (one per patch '
                         f'embedding), got {paddings!r}.')
    for k in spm_stages:
        if paddings[k] not in (0, 'corner'):
            raise ValueError(f'SPMPVT: paddings[{k}]={paddings[k]!r} cannot be honoured: '
                             f'merge {k} is Stepwise Patch Merging, which pads odd maps '
                             f"by itself at the bottom/right ('corner'); give 0 or "
                             f"'corner' there, or leave merge {k} out of spm_stages.")
    return tuple(paddings)


def pretrain_grids(pretrain_img_size: Union[int, Sequence[int]]) -> tuple:
    """The four stages' position-embedding grids ``(h, w)`` for mmdet's
    ``pretrain_img_size`` (an int, or a tuple of one or two).

    Raises:
        PVTArgumentError: For a tuple of another length.
        ValueError: For a side below 32 pixels: stage 4 would have no grid.
    """
    size = pretrain_img_size
    if isinstance(size, int):
        size = (size, size)
    elif isinstance(size, (list, tuple)):
        if len(size) == 1:
            size = (size[0], size[0])
        if len(size) != 2:
            raise PVTArgumentError(f'SPMPVT: pretrain_img_size should have length 1 or '
                                   f'2, but got {len(size)}.')
    if not (isinstance(size, tuple) and all(isinstance(s, int) and s >= 32 for s in size)):
        raise ValueError(f'SPMPVT: pretrain_img_size must be an int or (height, width) '
                         f'of at least 32 pixels (stage 4 embeds positions on a grid '
                         f'of 1/32 the size), got {pretrain_img_size!r}.')
    return tuple((size[0] // 2**(i + 2), size[1] // 2**(i + 2)) for i in range(4))


def init_cfg_of(init_cfg: InitCfg, pretrained: Optional[str]) -> InitCfg:
    """``init_cfg`` with mmdet's PVT spellings of a checkpoint (a dict with
    ``checkpoint`` and no ``type``; ``pretrained=PATH``) as ``Pretrained``."""
    if pretrained is not None:
        if init_cfg is not None:
            raise PVTArgumentError('SPMPVT: give the checkpoint either as init_cfg or '
                                   'as pretrained (deprecated), not both.')
        if not isinstance(pretrained, str):
            raise TypeError(f'SPMPVT: pretrained must be a path or URL, got '
                            f'{pretrained!r}.')
        warnings.warn('SPMPVT: pretrained is deprecated (as in mmdet); use '
                      "init_cfg=dict(type='Pretrained', checkpoint=...).")
        return dict(type='Pretrained', checkpoint=pretrained)

    def typed(cfg):
        if isinstance(cfg, dict) and 'type' not in cfg and 'checkpoint' in cfg:
            return dict(cfg, type='Pretrained')
        return cfg

    if isinstance(init_cfg, (list, tuple)):
        return [typed(c) for c in init_cfg]
    return typed(init_cfg)

def arch_settings(arch: Union[str, dict], embed_dims: Optional[int], num_layers, num_heads,
              mlp_ratios, sr_ratios) -> dict:
    """The arch's fields, those that the PVT v1 arguments give replaced."""
    settings = dict(parse_arch(arch))
    given = dict(depths=num_layers, num_heads=num_heads, mlp_ratios=mlp_ratios,
                 sr_ratios=sr_ratios)
    for (field, value), name in zip(given.items(), ('num_layers', 'num_heads',
                                                    'mlp_ratios', 'sr_ratios')):
        if value is None:
            continue
        if len(value) != 4:
            raise PVTArgumentError(f'SPMPVT: {name} needs four entries (one per '
                                   f'stage), got {value!r}.')
        settings[field] = tuple(value)
    if embed_dims is not None or num_heads is not None:
        base = 64 if embed_dims is None else embed_dims
        settings['embed_dims'] = tuple(base * h for h in settings['num_heads'])
    return settings

def parse_arch(arch: Union[str, dict]) -> dict:
    if isinstance(arch, str):
        name = ARCH_ALIASES.get(arch.lower(), arch.lower())
        if name not in ARCH_SETTINGS:
            raise ValueError(f'SPMPVT: unknown arch {arch!r}; choose one of '
                             f'{sorted(ARCH_SETTINGS)} (or {sorted(ARCH_ALIASES)}) '
                             f'or pass a dict with the keys '
                             f'{sorted(_PVT_V1) + ["depths"]}.')
        return ARCH_SETTINGS[name]
    keys = set(_PVT_V1) | {'depths'}
    if not isinstance(arch, dict) or set(arch) != keys:
        raise ValueError(f'SPMPVT: a custom arch must be a dict with exactly '
                         f'the keys {sorted(keys)}, got {arch!r}.')
    if any(len(v) != 4 for v in arch.values()):
        raise ValueError(f'SPMPVT: every arch field needs four entries '
                         f'(one per stage), got {arch!r}.')
    return {k: tuple(v) for k, v in arch.items()}
