"""Convert an SPM-PVT checkpoint in the authors' key layout to mmpretrain's.

Usage: python tools/model_converters/spm2mmspm.py SRC DST [--overwrite]

SRC: the reference checkpoint (state dict at the top level or under `model` /
`state_dict`); it is read without unpickling arbitrary objects. DST: an
`ImageClassifier` state dict (`backbone.*`, plus `head.fc.*` when SRC has a
head) written as `.pth` holding tensors only, or as `.safetensors` when DST
ends so. Load it with configs/imagenet/spm-pvt-*_8xb128_in1k.py, or as the
backbone init of any detection/segmentation config.
"""
import argparse
import os.path as osp
import sys

import torch

from mmspm.models.spm_pvt import SPMPVT
from mmspm.models.spm_pvt_checkpoints import (ARCH_DEPTHS, arch_of, convert_reference,
                                              detect_layout, split_checkpoint, stage_depths)
from mmspm.safe_load import CheckpointError, check_shapes, load_file, unwrap


def infer_arch(backbone: dict) -> str:
    arch = arch_of(stage_depths(backbone))
    if arch is None:
        raise CheckpointError(
            f'Blocks per stage {stage_depths(backbone)} match no SPM-PVT arch '
            f'({ARCH_DEPTHS}).')
    return arch


def convert(src: str) -> tuple[dict, dict, str]:
    """(converted state, reference -> converted key mapping, arch)."""
    state = unwrap(load_file(src))
    if detect_layout(state) != 'reference':
        raise CheckpointError(f'{src} is not in the reference key layout '
                              f'(found the {detect_layout(state)!r} layout); '
                              f'nothing to convert.')
    out = {k: v.contiguous() for k, v in convert_reference(state).items()}
    mapping = dict(zip(state, out))
    backbone = split_checkpoint(out)[0]
    arch = infer_arch(backbone)
    expected = SPMPVT(arch, with_cls_token=True).state_dict()
    missing = sorted(set(expected) - set(backbone))
    if missing:
        raise CheckpointError(f'{src} lacks {len(missing)} SPM-PVT-{arch} '
                              f'weights, e.g. {missing[:5]}.')
    extra = sorted(set(backbone) - set(expected))
    if extra:
        raise CheckpointError(f'{src}: {extra[0]!r} has no place in SPM-PVT-{arch}.')
    check_shapes(expected, backbone)
    return out, mapping, arch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace DST if it exists')
    args = parser.parse_args()
    if osp.exists(args.dst) and not args.overwrite:
        print(f'error: {args.dst} exists; pass --overwrite to replace it.',
              file=sys.stderr)
        return 1
    try:
        state, mapping, arch = convert(args.src)
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'SPM-PVT-{arch}: {len(state)} tensors')
    for old, new in mapping.items():
        print(f'  {old} -> {new}')
    if args.dst.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file(state, args.dst)
    else:
        torch.save(state, args.dst)
    print(f'wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
