"""The SPM backbone families, one record each: the registry registers them,
the analysis tools name and tabulate them, and the tests walk them.

Adding a family is adding its record here (CONTRIBUTING.md says what else
is its own: module, conversions, tests, configs).
"""
from dataclasses import dataclass, field
from typing import Callable

from .spm_plugin import SPMPluginMixin
from .spm_pvt import SPMPVT
from .spm_pvtv2 import SPMPVTv2
from .spm_swin import SPMSwinTransformer

# Sizes as their papers name them, by the arguments that differ between them.
_PVT_SIZES = {(2, 2, 2, 2): 't', (3, 4, 6, 3): 's', (3, 4, 18, 3): 'm', (3, 8, 27, 3): 'l'}
_PVTV2_SIZES = {(32, (2, 2, 2, 2)): 'b0', (64, (2, 2, 2, 2)): 'b1',
                (64, (3, 4, 6, 3)): 'b2', (64, (3, 4, 18, 3)): 'b3',
                (64, (3, 8, 27, 3)): 'b4', (64, (3, 6, 40, 3)): 'b5'}
_SWIN_SIZES = {(96, (2, 2, 6, 2)): 't', (96, (2, 2, 18, 2)): 's',
               (128, (2, 2, 18, 2)): 'b', (192, (2, 2, 18, 2)): 'l'}


def _pvt_size(args: dict) -> str:
    arch = args.get('arch')  # SPMPVT: 'tiny' / 't' ..., or a dict with depths
    if isinstance(arch, str):
        return arch[0].lower()
    depths = arch['depths'] if isinstance(arch, dict) else args['num_layers']
    return _PVT_SIZES.get(tuple(depths), '?')


def _pvtv2_size(args: dict) -> str:
    return _PVTV2_SIZES.get((args['embed_dims'], tuple(args['num_layers'])), '?')


def _swin_size(args: dict) -> str:
    arch = args.get('arch')  # mmpretrain's Swin: 'tiny' / 't' ..., or a dict
    if isinstance(arch, str):
        return arch[0].lower()
    fields = arch if isinstance(arch, dict) else args
    return _SWIN_SIZES.get((fields['embed_dims'], tuple(fields['depths'])), '?')


@dataclass(frozen=True)
class Family:
    """One SPM backbone family.

    Args:
        token (str): The baseline's config-name token without its size, e.g.
            'pvt' (configs say ``spm-pvt-t`` and ``pvt-t``).
        display (str): How papers write ``token``, e.g. 'PVT'.
        spm (type): The SPM backbone class (registered under its class
            name).
        baselines (tuple[str, ...]): The type names the upstream codebases
            register the baseline backbone under (mmdet's and mmpretrain's
            may differ).
        size (Callable[[dict], str]): The size token (e.g. 't', 'b1'; '?'
            for none of the papers' sizes) from a backbone's arguments, the
            config's over the class's defaults.
        compared (dict): Arguments (over the mmdet classes' defaults) of the
            member that the tables of tools/analysis compare with its
            baseline, e.g. PVTv2-B1. Default: none (the defaults).
        per_scope (dict[str, str]): Codebase scope -> ``'module:Class'`` of
            an SPM class to register there instead of ``spm`` (imported only
            when that codebase is installed). Default: none.
    """
    token: str
    display: str
    spm: type
    baselines: tuple[str, ...]
    size: Callable[[dict], str]
    compared: dict = field(default_factory=dict)
    per_scope: dict[str, str] = field(default_factory=dict)

    @property
    def is_plugin(self) -> bool:
        """Whether the SPM backbone is an upstream backbone with its merges replaced.

        Such a backbone is an :class:`SPMPluginMixin`, rather than a model of
        its own.
        """
        return issubclass(self.spm, SPMPluginMixin)

    def kind_of(self, type_name: str) -> str:
        """Whether ``type_name`` is this family's SPM backbone or baseline.

        Args:
            type_name (str): A config's backbone ``type``, scope prefix
                allowed.

        Returns:
            str: 'spm' or 'baseline' when ``type_name`` is this family's,
            else ''.
        """
        name = type_name.split('.')[-1]
        if name == self.spm.__name__:
            return 'spm'
        return 'baseline' if name in self.baselines else ''


FAMILIES = (
    Family('pvt', 'PVT', SPMPVT, ('PyramidVisionTransformer', ), _pvt_size),
    Family('swin', 'Swin', SPMSwinTransformer, ('SwinTransformer', ), _swin_size,
           per_scope=dict(mmpretrain='mmspm.models.spm_swin_pretrain:SPMSwinTransformer')),
    Family('pvtv2', 'PVTv2', SPMPVTv2, ('PyramidVisionTransformerV2', 'PVTv2'), _pvtv2_size,
           compared=dict(embed_dims=64, num_layers=[2, 2, 2, 2])),
)


def family_of(type_name: str) -> tuple[Family, str]:
    """The family of a backbone ``type`` and whether it is the SPM backbone or the baseline.

    Args:
        type_name (str): A config's backbone ``type``.

    Returns:
        tuple[Family, str]: The family and the kind (see
        :meth:`Family.kind_of`).

    Raises:
        KeyError: A clear error for a type that belongs to no family.
    """
    for family in FAMILIES:
        kind = family.kind_of(type_name)
        if kind:
            return family, kind
    known = [t for f in FAMILIES for t in (f.spm.__name__, *f.baselines)]
    raise KeyError(f'backbone type {type_name!r} is in no SPM family (known: {known}); a new '
                   f'family is added to FAMILIES in mmspm/models/families.py.')
