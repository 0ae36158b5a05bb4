"""SPM-PVT's checkpoints: pure functions on state dicts, beside the model
(as mmdet keeps ``pvt_convert`` beside its PVT and timm its
``checkpoint_filter_fn``).

* The SPM authors' key layout (``patch_embed2.spm.*``, ``block1.*``,
  ``head.*``) and its renaming to mmspm's (:func:`convert_reference`).
* PVT v1 checkpoints (official and mmdet layouts) as a start for everything
  but the SPM layers (:func:`convert_pvt_v1`).
* The checks that refuse a state dict which is not of the model being loaded.
"""
import re
from collections import OrderedDict
from typing import Callable, Optional, Union

from torch import Tensor

from ..safe_load import CheckpointError, backbone_of
from .spm import KERNEL_SIZES

# Blocks per stage of each SPM-PVT size: the one field in which the sizes
# differ (docs/reference_model.md), so the only thing that tells their
# checkpoints apart.
ARCH_DEPTHS = dict(
    tiny=(2, 2, 2, 2),
    small=(3, 4, 6, 3),
    medium=(3, 4, 18, 3),
    large=(3, 8, 27, 3))

# The authors' keys (patch_embed2.spm.msa.local_conv_3.weight, block1.0.attn.q.weight,
# pos_embed4, cls_token, norm.*, head.*) -> mmspm's, by renaming alone.
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
_REFERENCE_KEY = re.compile(r'^(patch_embed[1-4]\.|pos_embed[1-4]$|block[1-4]\.)')
_BACKBONE_KEY = re.compile(r'^(patch_embeds|pos_embeds|stages)\.')


def detect_layout(state: dict) -> str:
    """'reference' (the authors' keys), 'openmmlab' (``backbone.*``: an
    mmpretrain classifier, mmdet detector or mmseg segmentor), 'backbone' (a
    bare SPMPVT state dict) or 'unknown'."""
    if any(_REFERENCE_KEY.match(k) for k in state):
        return 'reference'
    if any(k.startswith('backbone.') for k in state):
        return 'openmmlab'
    if any(_BACKBONE_KEY.match(k) for k in state):
        return 'backbone'
    return 'unknown'


def rename_reference_key(key: str) -> Optional[str]:
    """mmspm's name of a reference backbone key; None if it is not one."""
    if key == 'cls_token' or key.startswith('norm.'):
        return key
    if not _REFERENCE_KEY.match(key):
        return None
    for pattern, repl in REFERENCE_RULES:
        key = pattern.sub(repl, key)
    return key


def convert_reference(state: dict) -> 'OrderedDict[str, Tensor]':
    """A reference-layout state dict in mmpretrain's ``ImageClassifier``
    layout (``backbone.*``, ``head.fc.*``), the tensors unchanged and in order.
    Detectors and segmentors hold their backbone under ``backbone.`` too."""
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
    """(backbone state, classifier-head state ``{'fc.weight', ...}``, layout)."""
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
    """Blocks per stage in an mmspm-named state dict."""
    return tuple(
        len({k[len(prefix):].split('.')[2] for k in state
             if k.startswith(f'{prefix}stages.{i}.')}) for i in range(4))


def arch_of(depths: tuple[int, ...]) -> Optional[str]:
    """The SPM-PVT size with these blocks per stage, if any."""
    return next((n for n, d in ARCH_DEPTHS.items() if d == tuple(depths)), None)


# PVT v1 (no SPM): the official release keys (patch_embed{2,3,4}.proj.* are
# the convolutions SPM replaces) and mmdet's PyramidVisionTransformer keys.
_PVT_V1_KEY = re.compile(r'^(backbone\.)?(patch_embed[2-4]\.proj\.|layers\.[1-3]\.0\.projection\.)')
_MMDET_PVT_KEY = re.compile(r'^layers\.(\d)\.(\d)\.(.*)$')
# SPM-PVT's SPM layers: what it has instead of PVT v1's stage 2-4 embeddings.
_SPM_KEY = re.compile(r'^patch_embeds\.[1-3]\.')
_MMDET_PVT_BLOCK_RULES = [
    (re.compile(r'^attn\.attn\.out_proj\.'), 'attn.proj.'),
    (re.compile(r'^ffn\.layers\.0\.'), 'mlp.fc1.'),
    (re.compile(r'^ffn\.layers\.3\.'), 'mlp.fc2.'),
]


def is_pvt_v1(state: dict) -> bool:
    """Whether ``state`` holds a PVT v1 backbone (official or mmdet layout,
    bare or in a detector/segmentor), which has convolutions where SPM-PVT
    has SPM."""
    return any(_PVT_V1_KEY.match(k) for k in state)


def convert_pvt_v1(state: dict) -> tuple['OrderedDict[str, Tensor]', list[str]]:
    """The tensors of a PVT v1 checkpoint that SPM-PVT shares, under mmspm's
    names, and the keys left out (the stage 2-4 patch embeddings SPM
    replaces, mmdet's per-stage norms, the classifier head).

    Takes the official layout (the authors' key names, ``patch_embed2.proj``)
    and mmdet's ``PyramidVisionTransformer`` layout (``layers.{i}...``, whose
    ``in_proj`` packs ``q`` and ``kv`` and whose MLP is two 1x1 convolutions),
    bare or under ``backbone.``.
    """
    state = backbone_of(state)
    out, left_out = OrderedDict(), []
    for k, v in state.items():
        if (m := _MMDET_PVT_KEY.match(k)) is None:
            new = rename_reference_key(k)
            if new is None or _SPM_KEY.match(new):
                left_out.append(k)
            else:
                out[new] = v
            continue
        stage, part, rest = int(m[1]), int(m[2]), m[3]
        if part == 0 and stage == 0:
            out['patch_embeds.0.' + rest.replace('projection.', 'proj.')] = v
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


def pretrained_backbone(state: dict, filename: str,
                        from_pvt_v1: bool) -> tuple['OrderedDict[str, Tensor]', str, list[str]]:
    """What an SPMPVT loads from the checkpoint ``filename`` (its state dict
    ``state``, unwrapped): (the backbone tensors under mmspm's names, the
    layout found, the checkpoint keys left out).

    ``from_pvt_v1``: ``state`` must be PVT v1's (:func:`convert_pvt_v1`,
    layout ``'pvt_v1'``); without it a PVT v1 checkpoint is refused, so that
    one given by mistake for an SPM-PVT one does not leave the SPM layers
    untrained unnoticed. Checkpoints of no known layout are refused.
    """
    if from_pvt_v1:
        if not is_pvt_v1(state):
            raise CheckpointError(
                f'from_pvt_v1=True but {filename!r} is not a PVT v1 checkpoint '
                f'(no patch_embed2.proj.* or layers.1.0.projection.* keys); drop '
                f'from_pvt_v1 for SPM-PVT checkpoints.')
        backbone, left_out = convert_pvt_v1(state)
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


def check_pvt_v1_fit(filename: str, missing: list[str], unexpected: list[str]) -> list[str]:
    """After loading a converted PVT v1 checkpoint: only the SPM layers may be
    missing and nothing may be left over, else it is of another size. Returns
    the missing SPM-layer keys."""
    spm = [k for k in missing if _SPM_KEY.match(k)]
    if len(spm) != len(missing) or unexpected:
        raise CheckpointError(
            f'{filename!r} is not a PVT v1 checkpoint of this size: SPM-PVT '
            f'tensors missing from it: {sorted(set(missing) - set(spm))[:8]}; '
            f'tensors with no place in SPM-PVT: {unexpected[:8]} (check '
            f'`arch`).')
    return spm


def check_depths(state: dict, prefix: str, own: tuple[int, ...]) -> None:
    """Blocks per stage under ``prefix`` must be the model's ``own``: all
    SPM-PVT sizes share every tensor shape, so a checkpoint of another size
    would otherwise half-load."""
    found = stage_depths(state, prefix)
    if any(found) and found != tuple(own):
        raise CheckpointError(
            f'The checkpoint has {found} blocks per stage, the model {tuple(own)}: '
            f'it is SPM-PVT-{arch_of(found) or "?"}, not this arch (check '
            f'`arch`; stage keys {prefix}stages.*).')


def check_coverage(own: dict, state: dict, prefix: str, min_fraction: float = 0.5) -> None:
    """At least ``min_fraction`` of the model's tensors ``own`` must be in
    ``state`` under ``prefix``: otherwise it is another model's state dict."""
    matched = sum(k[len(prefix):] in own for k in state if k.startswith(prefix))
    if matched < min_fraction * len(own):
        raise CheckpointError(
            f'Only {matched} of the {len(own)} SPMPVT weights are in the '
            f'checkpoint: it is not an SPM-PVT checkpoint (a ResNet one, '
            f'say). Expected the reference layout, an mmpretrain/mmdet/mmseg '
            f'checkpoint with backbone.* keys, or a bare SPMPVT state dict; '
            f'PVT v1 checkpoints load with from_pvt_v1=True in init_cfg.')
