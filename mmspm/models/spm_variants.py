"""The paper's ablation options of SPM (what takes GLE's place, GLE's query
token, the guide token generator's kernel; docs/reference_model.md,
"Ablation variants") and which merges of a backbone are SPM: their names,
checks and the token naming a variant."""
from typing import Optional, Sequence

# The paper's ablations (docs/reference_model.md, "Ablation variants"), the
# reference first: what takes GLE's place, and the query token of GLE.
GLE_TYPES = ('attention', 'conv', 'avgpool')
GUIDE_TYPES = ('gtg', 'cls', 'gap')
DEFAULT_GUIDE_KERNEL_SIZE = 7
# A backbone's three merges (downsamplings between its four stages), numbered
# as the paper's ablation numbers them ("stage 1/2/3"): merge k leads into
# stage k + 1, i.e. it is the patch embedding of stage k counted from 0.
SPM_MERGES = (1, 2, 3)


def check_spm_stages(owner: str, spm_stages: Sequence[int],
                     num_merges: int = len(SPM_MERGES)) -> tuple[int, ...]:
    """Check ``spm_stages`` and return it as a sorted tuple.

    Entries out of range, repeated or not integers are refused, naming the
    range.

    Args:
        owner (str): The name of the caller, used in error messages.
        spm_stages (Sequence[int]): The merges that are SPM, numbered
            1..``num_merges`` (merge k leads into stage k + 1; ``()`` for
            none).
        num_merges (int): The number of merges. Default: ``len(SPM_MERGES)``
            (3).

    Returns:
        tuple[int, ...]: ``spm_stages`` as a sorted tuple.

    Raises:
        TypeError: If ``spm_stages`` is not a list or tuple.
        ValueError: If an entry is out of range, repeated or not an integer.
    """
    merges = tuple(range(1, num_merges + 1))
    if isinstance(spm_stages, int) or not isinstance(spm_stages, (list, tuple)):
        raise TypeError(f'{owner}: spm_stages must be a list or tuple of merge numbers in '
                        f'{merges} (merge k leads into stage k + 1; () for none), got '
                        f'{spm_stages!r}.')
    bad = [k for k in spm_stages if isinstance(k, bool) or not isinstance(k, int)
           or k not in merges]
    if bad:
        raise ValueError(f'{owner}: spm_stages={tuple(spm_stages)!r} has {bad}, not merge '
                         f'numbers: the merges are {merges} (merge k leads into stage k + 1, '
                         f'as the paper counts them).')
    if len(set(spm_stages)) != len(spm_stages):
        raise ValueError(f'{owner}: spm_stages={tuple(spm_stages)!r} names a merge twice; '
                         f'name each at most once.')
    return tuple(sorted(spm_stages))


# The options of the paper's ablations, as backbones take them.
VARIANT_ARGS = ('spm_stages', 'gle', 'guide', 'guide_kernel_size')


def variant_token(spm_stages: Optional[Sequence[int]] = SPM_MERGES, gle: str = 'attention',
                  guide: str = 'gtg',
                  guide_kernel_size: int = DEFAULT_GUIDE_KERNEL_SIZE) -> str:
    """The config-name suffix of an ablation variant.

    The suffix is '' for the reference (the defaults), else one part per
    option that differs, in this order: ``-spm1``, ``-spm12``, ``-spm3``, ...
    (the SPM merges; ``-nospm`` for none), ``-gle-conv`` / ``-gle-avgpool``,
    ``-guide-cls`` / ``-guide-gap``, ``-gtg3`` (guide kernel size).

    Args:
        spm_stages (Sequence[int] | None): The merges that are SPM;
            ``None`` is every merge, as SPM-Swin and SPM-PVTv2 default it.
            Default: ``SPM_MERGES`` (1, 2, 3).
        gle (str): What takes GLE's place (one of :data:`GLE_TYPES`).
            Default: 'attention'.
        guide (str): GLE's query token (one of :data:`GUIDE_TYPES`).
            Default: 'gtg'.
        guide_kernel_size (int): The kernel size of the guide token
            generator. Default: ``DEFAULT_GUIDE_KERNEL_SIZE`` (7).

    Returns:
        str: The config-name suffix; '' for the reference.
    """
    parts = []
    stages = SPM_MERGES if spm_stages is None else tuple(sorted(spm_stages))
    if stages != SPM_MERGES:
        parts.append('spm' + ''.join(map(str, stages)) if stages else 'nospm')
    if gle != 'attention':
        parts.append(f'gle-{gle}')
    if guide != 'gtg':
        parts.append(f'guide-{guide}')
    if guide_kernel_size != DEFAULT_GUIDE_KERNEL_SIZE:
        parts.append(f'gtg{guide_kernel_size}')
    return ''.join('-' + p for p in parts)


def check_variant(owner: str, gle: str, guide: str, guide_kernel_size: int) -> None:
    """Refuse an SPM ablation variant that does not exist or says nothing.

    Refused are: an unknown ``gle``/``guide``, an even or non-positive
    ``guide_kernel_size``, a guide option without GLE's attention (``gle``
    'conv' or 'avgpool' have no guide token) or a kernel size without the
    guide token generator (``guide`` 'cls' or 'gap' have none).

    Args:
        owner (str): The name of the caller, used in error messages.
        gle (str): What takes GLE's place, one of :data:`GLE_TYPES`.
        guide (str): GLE's query token, one of :data:`GUIDE_TYPES`.
        guide_kernel_size (int): The kernel size of the guide token
            generator; a positive odd integer.

    Raises:
        ValueError: If the variant does not exist or says nothing.
    """
    if gle not in GLE_TYPES:
        raise ValueError(f'{owner}: unknown gle={gle!r}; choose one of {GLE_TYPES}.')
    if guide not in GUIDE_TYPES:
        raise ValueError(f'{owner}: unknown guide={guide!r}; choose one of {GUIDE_TYPES}.')
    if (not isinstance(guide_kernel_size, int) or isinstance(guide_kernel_size, bool)
            or guide_kernel_size < 1 or guide_kernel_size % 2 == 0):
        raise ValueError(f'{owner}: guide_kernel_size must be a positive odd integer (the '
                         f'guide token generator is centred on each 2x2 window), got '
                         f'{guide_kernel_size!r}.')
    if gle != 'attention' and guide != 'gtg':
        raise ValueError(f"{owner}: guide={guide!r} needs gle='attention': gle={gle!r} has "
                         f'no guide token. Give one of the two options.')
    if guide_kernel_size != DEFAULT_GUIDE_KERNEL_SIZE and (gle, guide) != ('attention', 'gtg'):
        raise ValueError(f'{owner}: guide_kernel_size={guide_kernel_size} is the kernel of '
                         f"the guide token generator, which gle={gle!r}, guide={guide!r} "
                         f"does not have (it needs gle='attention', guide='gtg').")
