"""Effective receptive fields of backbones side by side, as in the paper's figure.

For each model: the absolute gradient of the centre of a stage's output map
(summed over its channels) with respect to the input image, summed over
input channels and averaged over the images of a folder (Luo et al., 2016;
the method the paper uses). Drawn as log-scaled heat maps in one PNG, with
the side of the smallest centred square holding 20%/50%/90% of the
contribution printed per model: the numbers that make the pictures
comparable::

    python tools/analysis/erf.py --images data/demo/imagenet/val --out erf.png \\
        --model configs/mask_rcnn/mask-rcnn_pvt-t_fpn_1x_coco.py \\
        --model configs/mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py [CHECKPOINT]

A model without a checkpoint is measured at its initialisation. The output
file is never written over.
"""
import argparse
import glob
import os
import os.path as osp

import matplotlib
import numpy as np

from mmspm.analysis import (contribution_square, effective_receptive_field, load_image,
                            load_models)

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

FRACTIONS = (0.2, 0.5, 0.9)
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')


def image_files(folder: str, num: int) -> list[str]:
    """The first ``num`` images under ``folder`` (recursively, sorted)."""
    files = sorted(p for p in glob.glob(osp.join(folder, '**', '*'), recursive=True)
                   if p.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise SystemExit(f'no images ({", ".join(IMAGE_SUFFIXES)}) under {folder}.')
    return files[:num]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', action='append', nargs='+', required=True,
                        metavar='CONFIG [CHECKPOINT]', help='repeat for each model')
    parser.add_argument('--images', required=True, help='folder of images')
    parser.add_argument('--out', required=True, help='PNG to write')
    parser.add_argument('--stage', type=int, default=4, choices=(1, 2, 3, 4),
                        help='stage whose output centre is used (default 4)')
    parser.add_argument('--size', type=int, default=512,
                        help='images are resized to SIZE x SIZE (default 512)')
    parser.add_argument('--num-images', type=int, default=50, help='(default 50)')
    args = parser.parse_args()
    if osp.exists(args.out):
        raise SystemExit(f'{args.out} exists; choose another --out (never written over).')
    files = image_files(args.images, args.num_images)
    models = load_models(args.model)

    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4), squeeze=False)
    header = ' | '.join(f'{f:.0%} square' for f in FRACTIONS)
    print(f'| model | stage | images | {header} |')
    print('|---|---|---|' + '---|' * len(FRACTIONS))
    for ax, (label, cfg, backbone) in zip(axes[0], models):
        images = (load_image(f, (args.size, args.size), cfg)[1] for f in files)
        erf = effective_receptive_field(lambda x: backbone(x)[args.stage - 1], images)
        erf /= len(files)
        sides = [contribution_square(erf, f) for f in FRACTIONS]
        cells = ' | '.join(f'{s} px ({s * s / erf.size:.1%})' for s in sides)
        print(f'| {label} | {args.stage} | {len(files)} | {cells} |', flush=True)
        shown = np.log10(erf / erf.max() * 1e3 + 1) / np.log10(1e3 + 1)
        im = ax.imshow(shown, cmap='RdYlGn_r', vmin=0, vmax=1)
        ax.set_title(f'{label}\nstage {args.stage}; 20/50/90%: '
                     f'{"/".join(str(s) for s in sides)} px', fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label='log contribution (scaled)')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=120, bbox_inches='tight')
    print(args.out)


if __name__ == '__main__':
    main()
