"""Export an mmspm config's model to ONNX with symbolic batch, height and width.

    python tools/deployment/pytorch2onnx.py CONFIG [CHECKPOINT] --out FILE
        [--shape H W] [--argmax] [--verify] [--image IMAGE]

Classifiers (mmpretrain) give ``logits`` (B, classes); Semantic FPN (mmseg)
gives ``logits`` (B, classes, H, W) resized to the input, or with
``--argmax`` the class per pixel, ``labels`` (B, H, W); Mask R-CNN (mmdet,
batch 1) gives ``boxes``, ``scores``, ``labels`` and ``masks`` (the 28x28
probabilities of each detection's class, pasted by
``mmspm.deployment.paste_masks``). The graph's input,
``input``, is the preprocessed float32 NCHW batch (normalised as the config's
data preprocessor does). Without CHECKPOINT the model keeps its own
initialisation (to try the export). ``--verify`` runs the file in
onnxruntime against PyTorch on IMAGE (resized to ``--shape``) or on a random
input and prints the worst difference; it fails when that exceeds
``--tolerance`` (detectors: when labels differ, a box moves by more than a
pixel or a pasted mask's IoU is below 0.99). The file's metadata holds the
config, for ``tools/deployment/onnx_demo.py``. See docs/deploy.md.
"""
import argparse
import os.path as osp

import torch
from mmengine.config import Config, DictAction

from mmspm.analysis import load_image
from mmspm.deployment import (DetectorWrapper, check_graph, export_onnx, load_model,
                               onnxruntime_outputs, paste_masks, run_onnxruntime)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', help='weights (default: none, '
                        "the model's own initialisation)")
    parser.add_argument('--out', required=True, help='the ONNX file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        default=(224, 224), help='the size the graph is captured '
                        'and verified at (default 224 224); the graph takes any size')
    parser.add_argument('--argmax', action='store_true',
                        help='segmentors: output the class per pixel, not the logits')
    parser.add_argument('--verify', action='store_true',
                        help='compare onnxruntime with PyTorch on one input')
    parser.add_argument('--image', help='--verify on this image (default: random input)')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='--verify fails above this worst absolute difference '
                        'of the logits (default 1e-4)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def verify_detector(model: torch.nn.Module, path: str, x: torch.Tensor) -> None:
    """onnxruntime's detections against mmdet's own ``predict`` (in the
    input's coordinates): labels, boxes (within a pixel) and pasted masks
    (IoU above 0.99)."""
    from mmdet.structures import DetDataSample
    hw = tuple(x.shape[2:])
    with torch.no_grad():
        sample = DetDataSample(metainfo=dict(img_shape=hw, ori_shape=hw, scale_factor=(1., 1.)))
        expected = model.predict(x, [sample])[0].pred_instances
    boxes, _, labels, masks = map(torch.from_numpy, onnxruntime_outputs(path, x))
    print(f'verify: {hw[0]}x{hw[1]}: {len(labels)} detections in onnxruntime, '
          f'{len(expected.labels)} in PyTorch')
    if not torch.equal(labels, expected.labels):
        raise SystemExit(f'verify: labels differ: {labels.tolist()} vs '
                         f'{expected.labels.tolist()}')
    if not len(labels):
        return
    pasted = paste_masks(masks, boxes, hw, model.test_cfg.rcnn.mask_thr_binary)
    union = (pasted | expected.masks).flatten(1).sum(1).clamp(min=1)
    iou = float(((pasted & expected.masks).flatten(1).sum(1) / union).min())
    worst = float((boxes - expected.bboxes).abs().max())
    print(f'verify: worst box corner difference {worst:.3g} px, lowest mask IoU {iou:.4f}')
    if worst > 1 or iou <= 0.99:
        raise SystemExit('verify: boxes differ by more than a pixel or masks by IoU 0.99')


def verify(wrapper: torch.nn.Module, path: str, x: torch.Tensor, tolerance: float) -> None:
    with torch.no_grad():
        expected = wrapper(x).numpy()
    got = run_onnxruntime(path, x)
    if got.shape != expected.shape:
        raise SystemExit(f'verify: onnxruntime output {got.shape}, PyTorch {expected.shape}')
    if wrapper.argmax:
        agree = float((got == expected).mean())
        print(f'verify: {x.shape[2]}x{x.shape[3]}: classes of onnxruntime and '
              f'PyTorch agree on {100 * agree:.3f}% of pixels')
        if agree < 0.999:
            raise SystemExit('verify: fewer than 99.9% of the pixels agree')
        return
    worst = float(abs(got - expected).max())
    print(f'verify: {x.shape[2]}x{x.shape[3]}: worst absolute difference between '
          f'onnxruntime and PyTorch {worst:.3g} (largest |logit| '
          f'{float(abs(expected).max()):.3g})')
    if worst > tolerance:
        raise SystemExit(f'verify: {worst:.3g} exceeds --tolerance {tolerance}')


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.image and not args.verify:
        raise SystemExit('--image is the input of --verify; add --verify.')
    if args.image and not osp.isfile(args.image):
        raise SystemExit(f'--image {args.image!r} is not a file.')
    model = load_model(cfg, args.checkpoint)
    wrapper = export_onnx(model, args.out, args.shape, args.argmax, cfg=cfg)
    info = check_graph(args.out)
    print(f'wrote {args.out}: input {info["input_dims"]}, '
          f'outputs {", ".join(wrapper.output_names)}, {len(info["ops"])} operator types')
    if args.verify:
        x = (load_image(args.image, args.shape, cfg)[1] if args.image else
             torch.randn(1, 3, *args.shape))
        if isinstance(wrapper, DetectorWrapper):
            verify_detector(model, args.out, x)
        else:
            verify(wrapper, args.out, x, args.tolerance)


if __name__ == '__main__':
    main()
