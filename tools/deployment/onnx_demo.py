"""Draw the predictions of an exported ONNX file, run in onnxruntime, on images.

    python tools/deployment/onnx_demo.py FILE IMAGE... --out DIR [--config CONFIG]
        [--score-thr 0.3]

FILE is a Mask R-CNN or Semantic FPN graph written by
``tools/deployment/pytorch2onnx.py``, whose metadata holds the model's config
(``--config`` overrides it, for files exported without it). Each image goes
through the config's test pipeline (its resize; annotations are not read)
and the data preprocessor's normalisation (no padding: the graph takes any
size), runs in onnxruntime, and its prediction, in the image's own size
(boxes rescaled, masks pasted, Semantic FPN's logits resized, as the
codebases' inference does), is drawn with the codebase's visualizer as
``tools/analysis/show_predictions.py`` draws it, into DIR/<image name>.png
(never written over). Prints the path of every picture.
"""
import argparse
import importlib
import os
import os.path as osp

from typing import Optional

import mmcv
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData, PixelData

from mmspm.analysis import normalisation
from mmspm.deployment import paste_masks, read_metadata
from mmspm.visualization import build_visualizer, draw_sample

# Pipeline steps that read annotations, which a user's image does not have.
ANNOTATION_STEPS = ('LoadAnnotations',)


def dataset_meta(cfg: Config) -> dict:
    """The class names and palette of the config's test set, as its dataset
    class would give them (without reading the data)."""
    registry = importlib.import_module(f'{cfg.default_scope}.registry')
    dataset = cfg.test_dataloader.dataset
    return registry.DATASETS.get(dataset.type)._load_metainfo(dataset.get('metainfo'))


def preprocess(cfg: Config, path: str) -> tuple[torch.Tensor, object]:
    """The graph's ``input`` for the image at ``path`` (1, 3, h, w) and the
    packed data sample (its metainfo: ``ori_shape``, ``img_shape``,
    ``scale_factor``)."""
    steps = [s for s in cfg.test_dataloader.dataset.pipeline
             if not s['type'].endswith(ANNOTATION_STEPS)]
    packed = Compose(steps)(dict(img_path=path, img_id=0))
    image = packed['inputs'].float()  # CHW, BGR as LoadImageFromFile reads it
    mean, std, rgb = normalisation(cfg)
    if rgb:
        image = image.flip(0)
    x = (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return x[None].contiguous(), packed['data_samples']


def predicted_sample(cfg: Config, task: str, outputs: list, names: list, sample):
    """``sample`` with the graph's ``outputs`` as its prediction, in the
    original image's size."""
    ori_shape = tuple(sample.ori_shape[:2])
    if task == 'detector':
        boxes, scores, labels, masks = map(torch.from_numpy, outputs)
        scale = torch.tensor(sample.scale_factor).repeat(2)
        boxes = boxes / scale  # mmdet's rescale to the original image
        sample.pred_instances = InstanceData(
            bboxes=boxes, scores=scores, labels=labels,
            masks=paste_masks(masks, boxes, ori_shape, cfg.model.test_cfg.rcnn.mask_thr_binary))
        return sample
    out = torch.from_numpy(outputs[0])
    if names[0] == 'logits':  # mmseg: logits resized to the original image, then argmax
        out = F.interpolate(out, size=ori_shape, mode='bilinear',
                            align_corners=cfg.model.decode_head.get('align_corners', False))
        labels = out.argmax(1)
    else:  # an --argmax graph: the classes themselves, resized
        labels = F.interpolate(out[:, None].float(), size=ori_shape, mode='nearest')[:, 0]
    sample.pred_sem_seg = PixelData(data=labels.long())
    return sample


def onnx_demo(path: str, images: list[str], out_dir: str, cfg: Optional[Config] = None,
              score_thr: float = 0.3) -> list[str]:
    """Draw the predictions of the ONNX file ``path`` on ``images`` into
    ``out_dir``; return the pictures' paths. ``cfg`` (default: the file's
    own) gives the preprocessing, the classes and the visualizer."""
    import onnxruntime
    meta = read_metadata(path)
    cfg = cfg or meta['config']
    if cfg is None:
        raise SystemExit(f'{path} holds no config (exported without one): pass --config.')
    if meta['task'] not in ('detector', 'segmentor'):
        raise SystemExit(f'{path} is a {meta["task"]}: onnx_demo draws detectors and '
                         f'segmentors (Mask R-CNN, Semantic FPN).')
    missing = [i for i in images if not osp.isfile(i)]
    if missing:
        raise SystemExit(f'{missing[0]!r} is not a file.')
    outputs = [osp.join(out_dir, osp.splitext(osp.basename(i))[0] + '.png') for i in images]
    existing = [p for p in outputs if osp.exists(p)]
    if existing:
        raise SystemExit(f'{existing[0]} exists; choose another --out '
                         f'(pictures are never written over).')
    os.makedirs(out_dir, exist_ok=True)
    init_default_scope(cfg.default_scope)
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    visualizer = build_visualizer(cfg, dataset_meta(cfg), f'onnx_demo_{id(session)}')
    for image, out_file in zip(images, outputs):
        x, sample = preprocess(cfg, image)
        result = predicted_sample(cfg, meta['task'], session.run(None, {'input': x.numpy()}),
                                  names, sample)
        rgb = mmcv.imread(image, channel_order='rgb')
        draw_sample(visualizer, cfg.default_scope, osp.basename(image), rgb, result,
                    out_file, score_thr, draw_gt=False)
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('file', help='an ONNX file of tools/deployment/pytorch2onnx.py')
    parser.add_argument('images', nargs='+', metavar='IMAGE')
    parser.add_argument('--out', required=True, help='the directory of the pictures')
    parser.add_argument('--config', help="the model's config (default: the file's own)")
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections drawn above this score (default 0.3)')
    args = parser.parse_args()
    cfg = Config.fromfile(args.config) if args.config else None
    for path in onnx_demo(args.file, args.images, args.out, cfg, args.score_thr):
        print(path)


if __name__ == '__main__':
    main()
