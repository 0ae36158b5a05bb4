"""Attention maps of a PVT block for one query position, as in the paper's figure.

For each model (SPM-PVT, or mmdet's PVT / PVTv2): the attention weights of the
chosen heads of one block (by default the first block of stage 2, as the
paper shows) for the query token under a pixel of the image, drawn over the
image as heat maps, one row per model, the query marked. Prints, per head,
the attention-weighted mean distance from the query to its keys: how far the
block looks::

    python tools/analysis/attention_map.py data/demo/imagenet/val/val_0000.JPEG \\
        --out attention.png \\
        --model configs/mask_rcnn/mask-rcnn_pvt-t_fpn_1x_coco.py \\
        --model configs/mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py [CHECKPOINT]

Stages, blocks and heads count from 1, as the paper does. A model without a
checkpoint is shown at its initialisation. The output file is never written
over.
"""
import argparse
import os
import os.path as osp

import matplotlib
import numpy as np

from mmspm.analysis import attention_module, attention_probs, load_image, load_models

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def key_map(weights: np.ndarray, grid: tuple[int, int], cell: int,
            size: tuple[int, int]) -> np.ndarray:
    """Weights over a key grid as an image of ``size``: key (i, j) covers the
    ``cell`` x ``cell`` pixels it was pooled from; pixels past the last key
    (maps not divisible by the reduction) get 0."""
    full = np.kron(weights.reshape(grid), np.ones((cell, cell)))
    out = np.zeros(size)
    h, w = min(size[0], full.shape[0]), min(size[1], full.shape[1])
    out[:h, :w] = full[:h, :w]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image')
    parser.add_argument('--model', action='append', nargs='+', required=True,
                        metavar='CONFIG [CHECKPOINT]', help='repeat for each model')
    parser.add_argument('--out', required=True, help='PNG to write')
    parser.add_argument('--stage', type=int, default=2, choices=(1, 2, 3, 4),
                        help='(default 2)')
    parser.add_argument('--block', type=int, default=1, help='(default 1)')
    parser.add_argument('--heads', type=int, nargs='+', default=[1, 2],
                        help='(default 1 2)')
    parser.add_argument('--query', type=int, nargs=2, metavar=('X', 'Y'),
                        help='query pixel in the resized image (default: the centre)')
    parser.add_argument('--size', type=int, default=224,
                        help='the image is resized to SIZE x SIZE (default 224)')
    args = parser.parse_args()
    if osp.exists(args.out):
        raise SystemExit(f'{args.out} exists; choose another --out (never written over).')
    qx, qy = args.query or (args.size // 2, args.size // 2)
    if not (0 <= qx < args.size and 0 <= qy < args.size):
        raise SystemExit(f'--query {qx} {qy} is outside the {args.size}x{args.size} image.')
    models = load_models(args.model)
    stage, block = args.stage - 1, args.block - 1
    stride = 4 << stage  # of the stage's token map: 4, 8, 16, 32

    cols = 1 + len(args.heads)
    fig, axes = plt.subplots(len(models), cols, figsize=(3 * cols, 3.2 * len(models)),
                             squeeze=False)
    print('| model | head | mean attention distance (px) |')
    print('|---|---|---|')
    for row, (label, cfg, backbone) in zip(axes, models):
        rgb, x = load_image(args.image, (args.size, args.size), cfg)
        probs, hw, grid = attention_probs(backbone, x, stage, block)
        if max(args.heads) > probs.shape[0] or min(args.heads) < 1:
            raise SystemExit(f'{label}: stage {args.stage} has {probs.shape[0]} '
                             f'heads; --heads counts from 1.')
        query = min(qy // stride, hw[0] - 1) * hw[1] + min(qx // stride, hw[1] - 1)
        cell = stride * attention_module(backbone, stage, block).sr_ratio
        centres = (np.indices(grid).reshape(2, -1).T + 0.5) * cell  # (y, x) of each key
        row[0].imshow(rgb)
        row[0].set_title(f'{label}\nstage {args.stage}, block {args.block}', fontsize=9)
        for ax, head in zip(row[1:], args.heads):
            weights = probs[head - 1, query].numpy()
            distance = float(weights @ np.hypot(centres[:, 0] - qy, centres[:, 1] - qx))
            print(f'| {label} | {head} | {distance:.1f} |', flush=True)
            heat = key_map(weights, grid, cell, rgb.shape[:2])
            ax.imshow(rgb)
            ax.imshow(heat / heat.max(), cmap='jet', alpha=0.5, vmin=0, vmax=1)
            ax.set_title(f'head {head}; mean distance {distance:.0f} px', fontsize=9)
        for ax in row:
            ax.plot(qx, qy, marker='*', color='white', markeredgecolor='black',
                    markersize=12)
            ax.set_xticks([])
            ax.set_yticks([])
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=120, bbox_inches='tight')
    print(args.out)


if __name__ == '__main__':
    main()
