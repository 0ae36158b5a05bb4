"""SPMPVT's architecture arguments: its own and those of mmdet's PVT v1.

Its own (``arch``) and those of mmdet's ``PyramidVisionTransformer`` (PVT
v1), so that mmdet's PVT configs build SPM-PVT with only ``type`` changed;
and mmdet's spellings of a checkpoint (:func:`init_cfg_of`)."""
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
# Each arch's fields by name (tiny, small, medium, large): the shared ones
# and its depths (spm_pvt_checkpoints.ARCH_DEPTHS), one per stage.
ARCH_SETTINGS = {name: dict(_PVT_V1, depths=depths) for name, depths in ARCH_DEPTHS.items()}

# Arguments of mmdet's PyramidVisionTransformer (PVT v1) that SPMPVT can only
# take at these values, and why: name -> (the one possible value, why).
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
    """An argument mmdet's ``PyramidVisionTransformer`` refuses with an assertion.

    A ValueError naming the problem, which code written for mmdet's PVT
    catches as the AssertionError it expects there.
    """


# Short arch names, as in the config names (spm-pvt-t, ...): alias -> the
# name in ARCH_SETTINGS.
ARCH_ALIASES = dict(t='tiny', s='small', m='medium', l='large')


def check_fixed_args(**args) -> None:
    """Refuse an mmdet PVT v1 argument at a value SPMPVT cannot honour.

    Lists and tuples compare as tuples.

    Args:
        **args: mmdet's arguments named in :data:`FIXED_PVT_V1_ARGS`, by
            name, at the values given.

    Raises:
        ValueError: For an argument at another value than the possible
            one, naming the argument, why, and the possible value.
    """
    for name, value in args.items():
        possible, why = FIXED_PVT_V1_ARGS[name]
        if (tuple(value) if isinstance(value, (list, tuple)) else value) != possible:
            raise ValueError(f'SPMPVT: {name}={value!r} cannot be honoured: {why}; '
                             f'only {name}={possible!r} is possible.')


def check_paddings(paddings: Sequence[Union[int, str]],
                   spm_stages: Sequence[int]) -> tuple:
    """mmdet's ``paddings`` as a tuple, refusing what SPMPVT cannot honour.

    One entry per patch embedding; a refusal names why.

    The entries of the PVT v1 patch embeddings (stage 1's, and the merges
    that are not SPM) are theirs to honour; an SPM merge pads an odd map by
    itself at the bottom/right (giving ``ceil(H/2)``), which is 'corner', so
    its entry must be 0 (mmdet's default) or 'corner'.

    Args:
        paddings (Sequence[int | str]): mmdet's ``paddings``: four entries,
            stage 1's embedding's and those of merges 1-3.
        spm_stages (Sequence[int]): The merges (1-3) that are SPM.

    Returns:
        tuple: ``paddings`` as a tuple.

    Raises:
        ValueError: If ``paddings`` is not a list or tuple of four entries,
            or an SPM merge's entry is neither 0 nor 'corner'.
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
    """The four stages' position-embedding grids for ``pretrain_img_size``.

    Stage ``i`` (from 0) embeds positions on a grid of ``1 / 2**(i + 2)``
    the size, floored.

    Args:
        pretrain_img_size (int | Sequence[int]): The side of a square
            image, or a tuple of one (a square) or two (height, width).

    Returns:
        tuple[tuple[int, int], ...]: The grids ``(h, w)`` of the four
        stages.

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
    """``init_cfg`` with mmdet's PVT spellings of a checkpoint as ``Pretrained``.

    mmdet's PVT takes a checkpoint as an ``init_cfg`` entry with
    ``checkpoint`` and no ``type``, or as ``pretrained=PATH`` (deprecated,
    with a warning); both become ``dict(type='Pretrained', ...)``.

    Args:
        init_cfg (dict | Sequence[dict] | None): SPMPVT's ``init_cfg``.
        pretrained (str | None): mmdet's deprecated checkpoint path or URL.

    Returns:
        dict | list[dict] | None: ``init_cfg`` with those entries typed, or
        the ``Pretrained`` entry of ``pretrained``.

    Raises:
        PVTArgumentError: If both ``init_cfg`` and ``pretrained`` are given.
        TypeError: If ``pretrained`` is not a string.
    """
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
        # mmdet's untyped checkpoint entry as Pretrained; others unchanged.
        if isinstance(cfg, dict) and 'type' not in cfg and 'checkpoint' in cfg:
            return dict(cfg, type='Pretrained')
        return cfg

    if isinstance(init_cfg, (list, tuple)):
        return [typed(c) for c in init_cfg]
    return typed(init_cfg)


def arch_settings(arch: Union[str, dict], embed_dims: Optional[int], num_layers, num_heads,
              mlp_ratios, sr_ratios) -> dict:
    """The arch's fields, those that the PVT v1 arguments give replaced.

    As in mmdet's PVT, ``embed_dims`` is the channels per head: the stages
    have ``embed_dims * num_heads[i]`` channels (64 per head when only
    ``num_heads`` is given).

    Args:
        arch (str | dict): See :func:`parse_arch`.
        embed_dims (int | None): mmdet's ``embed_dims``; None: the arch's
            (64 if ``num_heads`` is given).
        num_layers (Sequence[int] | None): The blocks per stage (the arch's
            ``depths``); None: the arch's.
        num_heads (Sequence[int] | None): The heads per stage; None: the
            arch's.
        mlp_ratios (Sequence[int] | None): The MLP ratio per stage; None:
            the arch's.
        sr_ratios (Sequence[int] | None): The spatial-reduction ratio per
            stage; None: the arch's.

    Returns:
        dict: ``embed_dims``, ``num_heads``, ``mlp_ratios``, ``sr_ratios``
        and ``depths``, four entries each.

    Raises:
        PVTArgumentError: For a per-stage argument without four entries.
        ValueError: For an ``arch`` that :func:`parse_arch` refuses.
    """
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
    """The fields of an arch given by name or as a dict.

    Args:
        arch (str | dict): A name in :data:`ARCH_SETTINGS` or
            :data:`ARCH_ALIASES` (any case), or a custom arch: a dict with
            exactly the keys ``embed_dims``, ``num_heads``, ``mlp_ratios``,
            ``sr_ratios`` and ``depths``, four entries each.

    Returns:
        dict: The arch's fields, as tuples (for a name, its
        :data:`ARCH_SETTINGS` entry itself).

    Raises:
        ValueError: For an unknown name, or a dict with other keys or a
            field without four entries.
    """
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
