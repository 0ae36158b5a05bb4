"""SPM-PVT's checkpoints: pure functions on state dicts, beside the model.

Beside it as mmdet keeps ``pvt_convert`` beside its PVT and timm its
``checkpoint_filter_fn``. They are:

* The SPM authors' key layout (``patch_embed2.spm.*``, ``block1.*``,
  ``head.*``) and its renaming to mmspm's (:func:`convert_reference`).
* PVT v1 checkpoints (official and mmdet layouts) as a start for everything
  but the SPM layers (:func:`convert_pvt_v1`); their stage 2-4 patch
  embeddings fill the merges an ablation variant keeps as PVT v1's.
* The checks that refuse a state dict which is not of the model being loaded,
  among them one of another ablation variant (:func:`check_variant_fits`).
"""
import re
from collections import OrderedDict
from typing import Callable, Optional, Sequence, Union

from torch import Tensor

from ..safe_load import CheckpointError, backbone_of
from .spm import KERNEL_SIZES
from .spm_variants import DEFAULT_GUIDE_KERNEL_SIZE, SPM_MERGES

# Blocks per stage of each SPM-PVT size (name -> depths): the one field in
# which the sizes differ (docs/reference_model.md), so the only thing that
# tells their checkpoints apart.
ARCH_DEPTHS = dict(
    tiny=(2, 2, 2, 2),
    small=(3, 4, 6, 3),
    medium=(3, 4, 18, 3),
    large=(3, 8, 27, 3))

# (pattern, replacement) rules, applied in order by rename_reference_key: the
# authors' backbone keys (patch_embed2.spm.msa.local_conv_3.weight,
# block1.0.attn.q.weight, pos_embed4) -> mmspm's, by renaming alone. cls_token
# and norm.* keep their names; head.* is the classifier's (convert_reference).
_RefRule = tuple[re.Pattern, Union[str, Callable[[re.Match], str]]]
REFERENCE_RULES: list[_RefRule] = [
    (re.compile(r'^patch_embed([1-4])\.(?:spm\.)?'),
     lambda m: f'patch_embeds.{int(m[1]) - 1}.'),
    (re.compile(r'\.msa\.local_conv_(\d)\.'),
     lambda m: f'.msa.local_convs.{KERNEL_SIZES.index(int(m[1]))}.'),
    (re.compile(r'\.gle\.attn\.qkv\.'), '.gle.qkv.'),
    (re.compile(r'^pos_embed([1-4])$'), lambda m: f'pos_embeds.{int(m[1]) - 1}'),
    (re.compile(r'^block([1-4])\.'), lambda m: f'stages.{int(m[1]) - 1}.'),
]
# Keys that tell the authors' layout (_REFERENCE_KEY) and a bare SPMPVT state
# dict (_BACKBONE_KEY).
_REFERENCE_KEY = re.compile(r'^(patch_embed[1-4]\.|pos_embed[1-4]$|block[1-4]\.)')
_BACKBONE_KEY = re.compile(r'^(patch_embeds|pos_embeds|stages)\.')


def detect_layout(state: dict) -> str:
    """The key layout of an SPM-PVT state dict.

    Args:
        state (dict): The state dict.

    Returns:
        str: 'reference' (the authors' keys), 'openmmlab' (``backbone.*``:
        an mmpretrain classifier, mmdet detector or mmseg segmentor),
        'backbone' (a bare SPMPVT state dict) or 'unknown'.
    """
    if any(_REFERENCE_KEY.match(k) for k in state):
        return 'reference'
    if any(k.startswith('backbone.') for k in state):
        return 'openmmlab'
    if any(_BACKBONE_KEY.match(k) for k in state):
        return 'backbone'
    return 'unknown'


def rename_reference_key(key: str) -> Optional[str]:
    """mmspm's name of a reference backbone key.

    ``cls_token`` and ``norm.*`` keep their names; the others are renamed by
    :data:`REFERENCE_RULES`.

    Args:
        key (str): A key of the authors' layout.

    Returns:
        str | None: mmspm's name; None if ``key`` is not a backbone key
        (e.g. ``head.*``).
    """
    if key == 'cls_token' or key.startswith('norm.'):
        return key
    if not _REFERENCE_KEY.match(key):
        return None
    for pattern, repl in REFERENCE_RULES:
        key = pattern.sub(repl, key)
    return key


def convert_reference(state: dict) -> 'OrderedDict[str, Tensor]':
    """A reference-layout state dict in mmpretrain's ``ImageClassifier`` layout.

    The keys become ``backbone.*`` and ``head.fc.*``, the tensors unchanged
    and in order. Detectors and segmentors hold their backbone under
    ``backbone.`` too.

    Args:
        state (dict): The state dict, in the authors' layout.

    Returns:
        OrderedDict[str, Tensor]: The state dict in mmpretrain's layout.

    Raises:
        CheckpointError: For a key that is neither the backbone's nor the
            head's.
    """
    out = OrderedDict()
    for k, v in state.items():
        if k.startswith('head.'):
            out['head.fc.' + k[len('head.'):]] = v
        elif (new := rename_reference_key(k)) is not None:
            out['backbone.' + new] = v
        else:
            raise CheckpointError(
                f'Reference-layout checkpoint has a key mmspm cannot map: '
                f'{k!r} (expected patch_embed*, pos_embed*, block*, norm.*, '
                f'cls_token, head.*). Is it an SPM-PVT checkpoint?')
    return out


def split_checkpoint(state: dict) -> tuple[dict, dict, str]:
    """Split a state dict of any known layout into backbone and classifier head.

    Args:
        state (dict): The state dict.

    Returns:
        tuple[OrderedDict[str, Tensor], OrderedDict[str, Tensor], str]: The
        backbone state (mmspm's names), the classifier-head state
        (``{'fc.weight', ...}``; empty if there is none) and the layout
        (:func:`detect_layout`); both states are empty for 'unknown'.

    Raises:
        CheckpointError: For a reference-layout key :func:`convert_reference`
            cannot map.
    """
    layout = detect_layout(state)
    if layout == 'reference':
        state = convert_reference(state)
    backbone, head = OrderedDict(), OrderedDict()
    if layout == 'backbone':
        backbone = OrderedDict(state)
    elif layout in ('reference', 'openmmlab'):
        for k, v in state.items():
            if k.startswith('backbone.'):
                backbone[k[len('backbone.'):]] = v
            elif k.startswith('head.fc.'):
                head[k[len('head.'):]] = v
    return backbone, head, layout


def stage_depths(state: dict, prefix: str = '') -> tuple[int, ...]:
    """Blocks per stage in an mmspm-named state dict.

    Args:
        state (dict): The state dict.
        prefix (str): The prefix of the backbone's keys. Default: ''.

    Returns:
        tuple[int, ...]: The number of blocks of each of the four stages.
    """
    return tuple(
        len({k[len(prefix):].split('.')[2] for k in state
             if k.startswith(f'{prefix}stages.{i}.')}) for i in range(4))


def arch_of(depths: tuple[int, ...]) -> Optional[str]:
    """The SPM-PVT size with these blocks per stage, if any.

    Args:
        depths (tuple[int, ...]): The blocks per stage.

    Returns:
        str | None: The size's name in :data:`ARCH_DEPTHS`; None if no size
        has them.
    """
    return next((n for n, d in ARCH_DEPTHS.items() if d == tuple(depths)), None)


# PVT v1 (no SPM): a key of the convolutions SPM replaces, in the official
# release (patch_embed{2,3,4}.proj.*) or in mmdet's PyramidVisionTransformer
# (layers.{1,2,3}.0.projection.*); any key of mmdet's.
_PVT_V1_KEY = re.compile(r'^(backbone\.)?(patch_embed[2-4]\.proj\.|layers\.[1-3]\.0\.projection\.)')
_MMDET_PVT_KEY = re.compile(r'^layers\.(\d)\.(\d)\.(.*)$')
# SPM-PVT's merges (SPM layers, or PVT v1's stage 2-4 embeddings).
_MERGE_KEY = re.compile(r'^patch_embeds\.([1-3])\.')


def _in_merges(key: str, merges: Sequence[int]) -> bool:
    """Whether ``key`` (mmspm-named) belongs to one of the merges ``merges``."""
    m = _MERGE_KEY.match(key)
    return m is not None and int(m[1]) in merges


# mmdet's PVT block names -> mmspm's, besides attn.attn.in_proj_* (split into
# q and kv by convert_pvt_v1).
_MMDET_PVT_BLOCK_RULES = [
    (re.compile(r'^attn\.attn\.out_proj\.'), 'attn.proj.'),
    (re.compile(r'^ffn\.layers\.0\.'), 'mlp.fc1.'),
    (re.compile(r'^ffn\.layers\.3\.'), 'mlp.fc2.'),
]


def is_pvt_v1(state: dict) -> bool:
    """Whether ``state`` holds a PVT v1 backbone.

    PVT v1 has convolutions where SPM-PVT has SPM; official or mmdet layout,
    bare or in a detector/segmentor (under ``backbone.``).

    Args:
        state (dict): The state dict.

    Returns:
        bool: True for a PVT v1 backbone.
    """
    return any(_PVT_V1_KEY.match(k) for k in state)


def convert_pvt_v1(state: dict, spm_merges: Sequence[int] = SPM_MERGES
                   ) -> tuple['OrderedDict[str, Tensor]', list[str]]:
    """The tensors of a PVT v1 checkpoint that SPM-PVT shares, under mmspm's names.

    Left out are the patch embeddings of the merges ``spm_merges``, which
    SPM replaces, mmdet's per-stage norms and the classifier head. The patch
    embeddings of the other merges are kept as ``patch_embeds.{k}.proj/norm``:
    an SPM-PVT whose ``spm_stages`` leaves them PVT v1's has them under these
    names.

    Takes the official layout (the authors' key names, ``patch_embed2.proj``)
    and mmdet's ``PyramidVisionTransformer`` layout (``layers.{i}...``, whose
    ``in_proj`` packs ``q`` and ``kv`` and whose MLP is two 1x1 convolutions),
    bare or under ``backbone.``.

    Args:
        state (dict): The PVT v1 state dict.
        spm_merges (Sequence[int]): The merges (1-3) that are SPM.
            Default: ``SPM_MERGES`` (all three).

    Returns:
        tuple[OrderedDict[str, Tensor], list[str]]: The backbone tensors
        under mmspm's names and the checkpoint keys left out.
    """
    state = backbone_of(state)
    out, left_out = OrderedDict(), []
    for k, v in state.items():
        if (m := _MMDET_PVT_KEY.match(k)) is None:
            new = rename_reference_key(k)
            if new is None or _in_merges(new, spm_merges):
                left_out.append(k)
            else:
                out[new] = v
            continue
        stage, part, rest = int(m[1]), int(m[2]), m[3]
        if part == 0 and stage not in spm_merges:
            out[f'patch_embeds.{stage}.' + rest.replace('projection.', 'proj.')] = v
        elif part == 1 and rest == '0.pos_embed':
            out[f'pos_embeds.{stage}'] = v
        elif part == 1:
            block, name = rest.split('.', 1)
            prefix = f'stages.{stage}.{int(block) - 1}.'
            if name.startswith('attn.attn.in_proj_'):
                kind = name[len('attn.attn.in_proj_'):]
                dim = v.shape[0] // 3
                out[f'{prefix}attn.q.{kind}'] = v[:dim]
                out[f'{prefix}attn.kv.{kind}'] = v[dim:]
                continue
            for pattern, repl in _MMDET_PVT_BLOCK_RULES:
                name = pattern.sub(repl, name)
            out[prefix + name] = v.flatten(1) if name.startswith('mlp.') and v.dim() == 4 else v
        else:
            left_out.append(k)
    return out, left_out


def pretrained_backbone(state: dict, filename: str, from_pvt_v1: bool,
                        spm_merges: Sequence[int] = SPM_MERGES
                        ) -> tuple['OrderedDict[str, Tensor]', str, list[str]]:
    """What an SPMPVT whose SPM merges are ``spm_merges`` loads from a checkpoint.

    ``from_pvt_v1``: ``state`` must be PVT v1's (:func:`convert_pvt_v1`,
    layout ``'pvt_v1'``); without it a PVT v1 checkpoint is refused, so that
    one given by mistake for an SPM-PVT one does not leave the SPM layers
    untrained unnoticed; a model with no SPM merge (PVT v1 itself) takes it
    without. Checkpoints of no known layout are refused.

    Args:
        state (dict): The checkpoint's state dict, unwrapped.
        filename (str): The checkpoint, named in the error messages.
        from_pvt_v1 (bool): Whether ``state`` is meant to be PVT v1's.
        spm_merges (Sequence[int]): The model's SPM merges (1-3).
            Default: ``SPM_MERGES`` (all three).

    Returns:
        tuple[OrderedDict[str, Tensor], str, list[str]]: The backbone tensors
        under mmspm's names, the layout found ('pvt_v1' or one of
        :func:`detect_layout`'s) and the checkpoint keys left out.

    Raises:
        CheckpointError: If ``from_pvt_v1`` is given for a checkpoint that is
            not PVT v1's, a PVT v1 checkpoint comes without it, the
            checkpoint is of no known layout, or it has a reference-layout
            key :func:`convert_reference` cannot map.
    """
    if not spm_merges and is_pvt_v1(state):
        from_pvt_v1 = True  # nothing would stay untrained
    if from_pvt_v1:
        if not is_pvt_v1(state):
            raise CheckpointError(
                f'from_pvt_v1=True but {filename!r} is not a PVT v1 checkpoint '
                f'(no patch_embed2.proj.* or layers.1.0.projection.* keys); drop '
                f'from_pvt_v1 for SPM-PVT checkpoints.')
        backbone, left_out = convert_pvt_v1(state, spm_merges)
        return backbone, 'pvt_v1', left_out
    if is_pvt_v1(state):
        raise CheckpointError(
            f'{filename!r} is a PVT v1 checkpoint: its stage 2-4 patch '
            f'embeddings are convolutions where SPM-PVT has SPM layers, so '
            f'those would stay untrained. To start SPM-PVT from PVT v1 '
            f'weights on purpose, say so: init_cfg=dict(type=\'Pretrained\', '
            f'checkpoint=..., from_pvt_v1=True).')
    backbone, _, layout = split_checkpoint(state)
    if layout == 'unknown':
        raise CheckpointError(
            f'{filename!r} is in no layout mmspm knows (no patch_embed*/'
            f'block* reference keys, no backbone.* keys, no patch_embeds.* '
            f'keys).')
    return backbone, layout, []


def check_pvt_v1_fit(filename: str, missing: list[str], unexpected: list[str],
                     spm_merges: Sequence[int] = SPM_MERGES) -> list[str]:
    """Check what loading a converted PVT v1 checkpoint missed and left over.

    Only the SPM layers (of the merges ``spm_merges``) may be missing and
    nothing may be left over, else it is of another size.

    Args:
        filename (str): The checkpoint, named in the error message.
        missing (list[str]): The model's keys the checkpoint did not have.
        unexpected (list[str]): The checkpoint's keys the model does not have.
        spm_merges (Sequence[int]): The model's SPM merges (1-3).
            Default: ``SPM_MERGES`` (all three).

    Returns:
        list[str]: The missing SPM-layer keys.

    Raises:
        CheckpointError: If other tensors are missing or any are left over.
    """
    spm = [k for k in missing if _in_merges(k, spm_merges)]
    if len(spm) != len(missing) or unexpected:
        raise CheckpointError(
            f'{filename!r} is not a PVT v1 checkpoint of this size: SPM-PVT '
            f'tensors missing from it: {sorted(set(missing) - set(spm))[:8]}; '
            f'tensors with no place in SPM-PVT: {unexpected[:8]} (check '
            f'`arch`).')
    return spm


def check_depths(state: dict, prefix: str, own: tuple[int, ...]) -> None:
    """Refuse a state dict with other blocks per stage than the model's.

    All SPM-PVT sizes share every tensor shape, so a checkpoint of another
    size would otherwise half-load. A state dict without stage keys passes.

    Args:
        state (dict): The state dict, mmspm-named.
        prefix (str): The prefix of the backbone's keys in ``state``.
        own (tuple[int, ...]): The model's blocks per stage.

    Raises:
        CheckpointError: If the blocks per stage under ``prefix`` are not
            ``own``, naming the checkpoint's size.
    """
    found = stage_depths(state, prefix)
    if any(found) and found != tuple(own):
        raise CheckpointError(
            f'The checkpoint has {found} blocks per stage, the model {tuple(own)}: '
            f'it is SPM-PVT-{arch_of(found) or "?"}, not this arch (check '
            f'`arch`; stage keys {prefix}stages.*).')


def check_coverage(own: dict, state: dict, prefix: str, min_fraction: float = 0.5) -> None:
    """Refuse a state dict that holds too few of the model's tensors.

    At least ``min_fraction`` of the model's tensors must be in ``state``
    under ``prefix``: otherwise it is another model's state dict.

    Args:
        own (dict): The model's state dict.
        state (dict): The state dict to load.
        prefix (str): The prefix of the backbone's keys in ``state``.
        min_fraction (float): The fraction needed. Default: 0.5.

    Raises:
        CheckpointError: If fewer are there.
    """
    matched = sum(k[len(prefix):] in own for k in state if k.startswith(prefix))
    if matched < min_fraction * len(own):
        raise CheckpointError(
            f'Only {matched} of the {len(own)} SPMPVT weights are in the '
            f'checkpoint: it is not an SPM-PVT checkpoint (a ResNet one, '
            f'say). Expected the reference layout, an mmpretrain/mmdet/mmseg '
            f'checkpoint with backbone.* keys, or a bare SPMPVT state dict; '
            f'PVT v1 checkpoints load with from_pvt_v1=True in init_cfg.')


# A merge's kind: 'pvt' (PVT v1's patch embedding) or an SPM variant, as
# SPMPVT's (gle, guide, guide_kernel_size); None where the state dict cannot
# tell.
MergeKind = Union[str, tuple[str, str, int], None]


def merge_kinds(state: dict, prefix: str = '') -> dict[int, MergeKind]:
    """The kind of each merge (1-3) in an mmspm-named SPM-PVT state dict.

    Read off its keys as docs/reference_model.md, section "Ablation variants"
    names them.

    Args:
        state (dict): The state dict.
        prefix (str): The prefix of the backbone's keys. Default: ''.

    Returns:
        dict[int, MergeKind]: The kind of each merge with keys under
        ``prefix``; merges without keys are left out.
    """
    kinds: dict[int, MergeKind] = {}
    for k in SPM_MERGES:
        head = f'{prefix}patch_embeds.{k}.'
        keys = {key[len(head):]: v for key, v in state.items() if key.startswith(head)}
        if not keys:
            continue
        if 'proj.weight' in keys and not any(n.startswith(('msa.', 'gle.')) for n in keys):
            kinds[k] = 'pvt'
        elif 'gle.qkv.weight' in keys:
            gtg = keys.get('gle.gtg.2.weight')
            guide = 'gtg' if gtg is not None else 'cls' if 'gle.cls_token' in keys else 'gap'
            kinds[k] = ('attention', guide,
                        gtg.shape[-1] if gtg is not None else DEFAULT_GUIDE_KERNEL_SIZE)
        elif 'gle.conv.weight' in keys:
            kinds[k] = ('conv', 'gtg', DEFAULT_GUIDE_KERNEL_SIZE)
        elif 'gle.norm1.weight' in keys:
            kinds[k] = ('avgpool', 'gtg', DEFAULT_GUIDE_KERNEL_SIZE)
        else:
            kinds[k] = None
    return kinds


def _variant_options(kind: tuple[str, str, int]) -> str:
    """An SPM merge's kind as SPMPVT's options, those at their defaults left out."""
    defaults = ('attention', 'gtg', DEFAULT_GUIDE_KERNEL_SIZE)
    return ''.join(f', {name}={value!r}' for name, value, default in zip(
        ('gle', 'guide', 'guide_kernel_size'), kind, defaults) if value != default)


def describe_variant(kinds: dict[int, MergeKind]) -> str:
    """Merge kinds as SPMPVT's options, e.g. ``spm_stages=(1, 2, 3), gle='conv'``.

    Options at their defaults are left out; merge by merge where the SPM
    merges differ; merges without tensors are named.

    Args:
        kinds (dict[int, MergeKind]): The merges' kinds
            (:func:`merge_kinds`).

    Returns:
        str: The options.
    """
    spm = tuple(k for k, v in kinds.items() if v not in ('pvt', None))
    variants = {kinds[k] for k in spm}
    text = f'spm_stages={spm}'
    if len(variants) == 1:
        text += _variant_options(variants.pop())
    elif variants:
        text += ' (' + '; '.join(f'merge {k}: SPM{_variant_options(kinds[k])}'
                                 for k in spm) + ')'
    absent = [k for k in SPM_MERGES if k not in kinds]
    return text + (f' (no tensors of merge(s) {absent})' if absent else '')


def check_variant_fits(own: dict, state: dict, prefix: str) -> None:
    """Refuse a state dict of another ablation variant than the model's.

    The merges of ``state`` (under ``prefix``) must be of the kind the
    model's are: a checkpoint of another ablation variant is refused, naming
    both, instead of half-loading. Merges whose kind ``state`` does not tell
    are not compared.

    Args:
        own (dict): The model's state dict.
        state (dict): The state dict to load.
        prefix (str): The prefix of the backbone's keys in ``state``.

    Raises:
        CheckpointError: If a merge's kind differs, naming both variants.
    """
    mine, theirs = merge_kinds(own), merge_kinds(state, prefix)
    differ = [k for k, kind in theirs.items() if kind is not None and kind != mine.get(k)]
    if differ:
        raise CheckpointError(
            f'The checkpoint is SPM-PVT with {describe_variant(theirs)}, the model is '
            f'SPM-PVT with {describe_variant(mine)}: they differ at merge(s) {differ} '
            f'(keys {prefix}patch_embeds.{differ[0]}.*). Build the model with the '
            f"checkpoint's options (spm_stages, gle, guide, guide_kernel_size) or load a "
            f'checkpoint of this variant.')
