"""Checkpoints: safe loading and every known layout mapped onto :class:`SPMPVT`.

Layouts recognised (the state dict may sit at the top level or under
``state_dict`` / ``model``; a DDP ``module.`` prefix is removed):

* ``reference``: the authors' keys (``patch_embed2.spm.msa.local_conv_3.weight``,
  ``block1.0.attn.q.weight``, ``pos_embed4``, ``cls_token``, ``head.weight``).
* ``openmmlab``: ``backbone.*`` keys, as written by mmpretrain's
  ``ImageClassifier`` (and ``spm2mmspm.py``), mmdet detectors and mmseg
  segmentors; ``head.fc.*`` is a classifier head, other heads are ignored.
* ``backbone``: a bare SPMPVT state dict (``patch_embeds.0.proj.weight``...).

Checkpoints are untrusted: ``.safetensors`` files are read directly, every
other file with ``torch.load(weights_only=True)``; the only non-tensor types
allowed are the exact ones mmengine's runner writes (:data:`MMENGINE_SAFE_GLOBALS`).
"""
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Callable, Optional, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from torch import Tensor, nn

KERNEL_SIZES = (3, 5, 7, 9)


def _history_buffer_statistic(owner: type, name: str) -> Callable:
    """Stands in for ``getattr`` while unpickling, for one use only.

    A HistoryBuffer pickles its statistics methods as
    ``getattr(HistoryBuffer, 'mean')``; allowing the real ``getattr`` would let
    a checkpoint fetch any attribute of any allowed global.
    """
    if owner is HistoryBuffer and (name in ('min', 'max', 'current', 'mean')
                                   or name in HistoryBuffer._statistics_methods):
        return getattr(owner, name)
    raise pickle.UnpicklingError(f'getattr({owner!r}, {name!r}) is not allowed '
                                 f'in a checkpoint')


# What mmengine 0.10.7 runner checkpoints hold besides tensors: HistoryBuffer
# objects (with their statistics methods) and numpy arrays/scalars in
# `message_hub`, numpy scalars in `meta`.
MMENGINE_SAFE_GLOBALS = [
    HistoryBuffer,
    (_history_buffer_statistic, 'builtins.getattr'),
    np.ndarray,
    np.dtype,
    np.core.multiarray._reconstruct,
    np.core.multiarray.scalar,
    *{type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')},
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def register_safe_globals() -> None:
    """Allow exactly mmengine's checkpoint types in ``weights_only`` loads.

    mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, which torch
    >= 2.6 defaults to True, so its own checkpoints (``--resume``,
    ``load_from``, ``mim test --checkpoint``) fail to load. Allow-listing the
    types keeps every other pickle refused.
    """
    torch.serialization.add_safe_globals(MMENGINE_SAFE_GLOBALS)


# What torch's weights_only unpickler says when a pickle asks for code.
_REFUSED_MESSAGES = ('Unsupported global', 'unrecognized function',
                     'is not allowed in a checkpoint', 'is blocked')


def _unpickling_detail(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines()]
    return next((line for line in lines if 'WeightsUnpickler error' in line),
                lines[-1] if lines else type(error).__name__)


def load_file(path: str) -> dict:
    """Read a checkpoint file without running pickled code."""
    if not osp.isfile(path):
        raise CheckpointError(f'Checkpoint {path!r} does not exist.')
    if path.endswith('.safetensors'):
        from safetensors import SafetensorError
        from safetensors.torch import load_file as load_safetensors
        try:
            return load_safetensors(path, device='cpu')
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f'Checkpoint {path!r} is not a readable '
                                  f'safetensors file ({e}).') from e
    try:
        # Not torch's safe_globals() context: on exit it removes the types
        # again, also for everyone who registered them before.
        register_safe_globals()
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if any(m in str(e) for m in _REFUSED_MESSAGES):
            raise CheckpointError(
                f'Checkpoint {path!r} holds pickled objects that are not '
                f'tensors or mmengine checkpoint data, so it was refused '
                f'(it could run code). Save a plain state dict of tensors, '
                f'or a .safetensors file. Detail: {_unpickling_detail(e)}'
            ) from e
        raise CheckpointError(f'Checkpoint {path!r} is corrupt or truncated '
                              f'({_unpickling_detail(e)}).') from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f'Checkpoint {path!r} is corrupt or truncated '
                              f'({type(e).__name__}: {e}).') from e


def unwrap(checkpoint: dict) -> 'OrderedDict[str, Tensor]':
    """The state dict inside a checkpoint, tensors only, DDP prefix removed."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'Expected a checkpoint dict, got '
                              f'{type(checkpoint).__name__}.')
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state = OrderedDict()
    for k, v in checkpoint.items():
        if not isinstance(v, Tensor):
            raise CheckpointError(f'Checkpoint entry {k!r} is a '
                                  f'{type(v).__name__}, not a tensor: this is '
                                  f'not a state dict.')
        state[k[len('module.'):] if k.startswith('module.') else k] = v
    return state


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
    if any(_REFERENCE_KEY.match(k) for k in state):
        return 'reference'
    if any(k.startswith('backbone.') for k in state):
        return 'openmmlab'
    if any(_BACKBONE_KEY.match(k) for k in state):
        return 'backbone'
    return 'unknown'


def rename_reference_key(key: str) -> Optional[str]:
    """mmspm's name of a reference backbone key; None if it is not one."""
    if key in ('cls_token', ) or key.startswith('norm.'):
        return key
    if not _REFERENCE_KEY.match(key):
        return None
    for pattern, repl in REFERENCE_RULES:
        key = pattern.sub(repl, key)
    return key


def reference_mapping(state: dict) -> dict[str, str]:
    """Reference key -> mmpretrain ``ImageClassifier`` key, for every key."""
    mapping = {}
    for k in state:
        if k.startswith('head.'):
            mapping[k] = 'head.fc.' + k[len('head.'):]
        elif (new := rename_reference_key(k)) is not None:
            mapping[k] = 'backbone.' + new
        else:
            raise CheckpointError(
                f'Reference-layout checkpoint has a key mmspm cannot map: '
                f'{k!r} (expected patch_embed*, pos_embed*, block*, norm.*, '
                f'cls_token, head.*). Is it an SPM-PVT checkpoint?')
    return mapping


def split_checkpoint(state: dict) -> tuple[dict, dict, str]:
    """(backbone state, classifier-head state ``{'fc.weight', ...}``, layout)."""
    layout = detect_layout(state)
    if layout == 'reference':
        mapping = reference_mapping(state)
        state = OrderedDict((mapping[k], v) for k, v in state.items())
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


def _resize_pos(pos: Tensor, num_tokens: int) -> Tensor:
    """Bilinearly resize a square ``(1, N, C)`` grid to ``num_tokens`` tokens."""
    src, dst = round(pos.shape[1]**0.5), round(num_tokens**0.5)
    if src * src != pos.shape[1] or dst * dst != num_tokens:
        raise CheckpointError(f'Cannot resize a position embedding of '
                              f'{pos.shape[1]} tokens to {num_tokens}: both '
                              f'must be square grids.')
    grid = pos.reshape(1, src, src, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(
        grid.float(), size=(dst, dst), mode='bilinear', align_corners=False)
    return grid.flatten(2).transpose(1, 2).to(pos.dtype)


def adapt_to_model(model: nn.Module, state: dict, prefix: str = '') -> list[str]:
    """Fit backbone entries of ``state`` (under ``prefix``) to ``model`` in place.

    Dense models drop the classification-only entries (``cls_token``,
    ``norm.*`` and the cls entry of the last position embedding); position
    embeddings of another grid are interpolated. Returns what was changed.
    """
    notes = []
    if not model.with_cls_token:
        for k in [k for k in state if k == prefix + 'cls_token'
                  or k.startswith(prefix + 'norm.')]:
            del state[k]
            notes.append(f'dropped {k} (dense mode)')
    for i, own in enumerate(model.pos_embeds):
        key = f'{prefix}pos_embeds.{i}'
        pos = state.get(key)
        if pos is None or pos.shape == own.shape or pos.dim() != 3:
            continue
        has_cls = pos.shape[1] != round(pos.shape[1]**0.5)**2
        wants_cls = i == 3 and model.with_cls_token
        cls, grid = (pos[:, :1], pos[:, 1:]) if has_cls else (None, pos)
        if wants_cls and cls is None:
            raise CheckpointError(f'{key} has no cls-token entry but the model '
                                  f'has with_cls_token=True; use a '
                                  f'classification checkpoint.')
        n_grid = own.shape[1] - int(wants_cls)
        if grid.shape[1] != n_grid:
            grid = _resize_pos(grid, n_grid)
            notes.append(f'interpolated {key} to {n_grid} tokens')
        state[key] = torch.cat([cls, grid], 1) if wants_cls else grid
        if has_cls and not wants_cls:
            notes.append(f'dropped the cls entry of {key} (dense mode)')
    return notes


def check_shapes(own: dict, state: dict, prefix: str = '') -> None:
    """Every checkpoint tensor under ``prefix`` that the model (its state dict
    ``own``) has must have the model's shape."""
    for k, v in state.items():
        if k.startswith(prefix) and k[len(prefix):] in own:
            shape = own[k[len(prefix):]].shape
            if v.shape != shape:
                raise CheckpointError(
                    f'Checkpoint tensor {k!r} has shape {tuple(v.shape)} but '
                    f'the model expects {tuple(shape)}: the checkpoint is of '
                    f'another architecture (check `arch`).')


def stage_depths(state: dict, prefix: str = '') -> tuple[int, ...]:
    """Blocks per stage in an mmspm-named state dict."""
    return tuple(
        len({k[len(prefix):].split('.')[2] for k in state
             if k.startswith(f'{prefix}stages.{i}.')}) for i in range(4))


def arch_of(depths: tuple[int, ...]) -> Optional[str]:
    from .models.spm_pvt import ARCH_SETTINGS
    return next((n for n, a in ARCH_SETTINGS.items() if a['depths'] == depths), None)


def check_depths(model: nn.Module, state: dict, prefix: str = '') -> None:
    """Blocks per stage must agree: all SPM-PVT sizes share every tensor
    shape, so a checkpoint of another size would otherwise half-load."""
    found = stage_depths(state, prefix)
    own = tuple(len(stage) for stage in model.stages)
    if any(found) and found != own:
        raise CheckpointError(
            f'The checkpoint has {found} blocks per stage, the model {own}: it '
            f'is SPM-PVT-{arch_of(found) or "?"}, not this arch (check `arch`; '
            f'stage keys {prefix}stages.*).')


def check_coverage(own: dict, state: dict, prefix: str = '',
                   min_fraction: float = 0.5) -> None:
    matched = sum(k[len(prefix):] in own for k in state if k.startswith(prefix))
    if matched < min_fraction * len(own):
        raise CheckpointError(
            f'Only {matched} of the {len(own)} SPMPVT weights are in the '
            f'checkpoint: it is not an SPM-PVT checkpoint (a ResNet or PVT '
            f'one, say). Expected the reference layout, an mmpretrain/mmdet/'
            f'mmseg checkpoint with backbone.* keys, or a bare SPMPVT state dict.')


def load_state_dict_hook(model: nn.Module, state: dict, prefix: str) -> None:
    """Pre-hook of ``SPMPVT._load_from_state_dict``.

    Runs for every load of the backbone's own keys (``init_cfg``,
    ``load_from``, ``--resume``, plain ``load_state_dict``): adapts dense/cls
    differences and position-embedding grids, then checks shapes and that the
    checkpoint is an SPM-PVT one at all.
    """
    if not any(k.startswith(prefix) for k in state):
        return
    for note in adapt_to_model(model, state, prefix):
        print_log(f'SPMPVT: {note}', logger='current')
    own = model.state_dict()
    check_shapes(own, state, prefix)
    check_depths(model, state, prefix)
    check_coverage(own, state, prefix)


def place_reference_state(model: nn.Module, state: dict) -> dict:
    """A reference-layout state dict renamed for the model that holds SPMPVT.

    ``load_from`` hands the whole checkpoint to the whole model (a detector,
    say), so the authors' keys must go under the backbone's prefix; a
    classifier's ``head`` gets the reference ``head.*`` as ``head.fc.*``.
    Other state dicts are returned as they are. The authors' checkpoints may
    nest the state dict under ``model``, which mmengine does not unwrap.
    """
    from .models import SPMPVT
    if isinstance(state.get('model'), dict):  # mmengine unwraps only 'state_dict'
        state = state['model']
    prefixes = [n for n, m in model.named_modules() if isinstance(m, SPMPVT)]
    if len(prefixes) != 1 or not prefixes[0] or detect_layout(state) != 'reference':
        return state
    backbone, head, _ = split_checkpoint(state)
    placed = OrderedDict((f'{prefixes[0]}.{k}', v) for k, v in backbone.items())
    if hasattr(getattr(model, 'head', None), 'fc'):
        placed.update((f'head.{k}', v) for k, v in head.items())
    print_log(f'SPMPVT: reference-layout checkpoint placed under '
              f'{prefixes[0]}.', logger='current')
    return placed


def patch_mmengine_loading() -> None:
    """Let mmengine's loader (``load_from``, ``load_checkpoint``, ``mim test``)
    take reference-layout checkpoints: its ``load_state_dict`` is wrapped to
    rename them first. mmengine offers no hook for this."""
    import mmengine.runner.checkpoint as mmengine_checkpoint
    original = mmengine_checkpoint.load_state_dict
    if getattr(original, 'mmspm_wrapped', False):
        return

    def load_state_dict(module, state_dict, strict=False, logger=None):
        target = module.module if hasattr(module, 'module') else module
        return original(module, place_reference_state(target, state_dict), strict, logger)

    load_state_dict.mmspm_wrapped = True
    mmengine_checkpoint.load_state_dict = load_state_dict


def load_backbone_checkpoint(model: nn.Module, path: str) -> tuple[list, list]:
    """Initialise an SPMPVT from a checkpoint file of any known layout.

    Returns (and logs) the missing and the unexpected keys.
    """
    backbone, _, layout = split_checkpoint(unwrap(load_file(path)))
    if layout == 'unknown':
        raise CheckpointError(
            f'{path!r} is in no layout mmspm knows (no patch_embed*/block* '
            f'reference keys, no backbone.* keys, no patch_embeds.* keys).')
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    total = len(model.state_dict())
    print_log(f'SPMPVT: loaded {path} ({layout} layout): {total - len(missing)} '
              f'of {total} backbone tensors; missing keys: '
              f'{", ".join(missing) or "none"}; unexpected keys: '
              f'{", ".join(unexpected) or "none"}', logger='current',
              level=30 if missing or unexpected else 20)
    return missing, unexpected
