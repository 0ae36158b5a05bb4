"""Draw a model's predictions beside the ground truth as PNG files.

Takes the first ``--num`` images of the config's test set through its test
pipeline and the model's ``test_step``, then draws each with the codebase's
own visualizer (mmdet: boxes, masks and class names; mmseg: the colour-coded
segmentation; mmpretrain: the predicted class), ground truth beside the
prediction::

    python tools/analysis/show_predictions.py CONFIG CHECKPOINT --out-dir DIR

Prints the path of every picture it wrote. Existing files are never
overwritten.
"""
import argparse
import importlib
import os
import os.path as osp

import mmcv
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate

from mmspm.builder import build_model
from mmspm.model_weights import load_model_weights
from mmspm.visualization import build_visualizer, draw_sample


def show_predictions(cfg: Config, checkpoint: str, out_dir: str, num: int = 4,
                     score_thr: float = 0.3) -> list[str]:
    """Write the pictures of the first ``num`` test images; return their paths."""
    scope = cfg.default_scope
    model = build_model(cfg)  # in the config's scope
    registry = importlib.import_module(f'{scope}.registry')
    load_model_weights(model, checkpoint)
    model.eval()
    dataset = registry.DATASETS.build(cfg.test_dataloader.dataset)
    visualizer = build_visualizer(cfg, dataset.metainfo, f'show_predictions_{id(model)}')

    names = [osp.basename(dataset.get_data_info(i)['img_path'])
             for i in range(min(num, len(dataset)))]
    outputs = [osp.join(out_dir, osp.splitext(n)[0] + '.png') for n in names]
    existing = [p for p in outputs if osp.exists(p)]
    if existing:  # checked before drawing any, so nothing is half-written
        raise SystemExit(f'{existing[0]} exists; choose another --out-dir '
                         f'(pictures are never written over).')
    for index, (name, out_file) in enumerate(zip(names, outputs)):
        with torch.no_grad():
            sample = model.test_step(pseudo_collate([dataset[index]]))[0]
        image = mmcv.imread(sample.img_path, channel_order='rgb')
        draw_sample(visualizer, scope, name, image, sample, out_file, score_thr)
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--num', type=int, default=4, help='images (default 4)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections drawn above this score (default 0.3)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    os.makedirs(args.out_dir, exist_ok=True)
    for path in show_predictions(cfg, args.checkpoint, args.out_dir, args.num,
                                 args.score_thr):
        print(path)


if __name__ == '__main__':
    main()
