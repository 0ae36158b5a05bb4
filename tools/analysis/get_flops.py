"""Parameters and FLOPs in the paper's format (FLOPs = multiply-adds, as PVT).

Usage:
    python tools/analysis/get_flops.py [--what backbones models plugins ablations] \
        [--archs t s m l]

backbones: the ImageNet classifiers (configs/imagenet, 1000-class head) at
    224x224: SPM-PVT as mmspm computes it, and the same model with the naive
    reference SPM layers (what the authors' code executes); mmdet's PVT v1
    dense backbones for reference.
models: Mask R-CNN at 800x1280 and Semantic FPN at 512x512, SPM-PVT vs PVT.
plugins: SPM on mmdet's Swin-T and PVTv2-B1 next to those backbones: dense
    backbones at 224x224, Mask R-CNN and Semantic FPN as above, and the SPM
    ImageNet classifiers.
ablations: the classifiers of configs/imagenet/ablations (the paper's
    ablations on SPM-PVT-T) and the full model, at 224x224.
"""
import argparse
import glob
import os.path as osp
from functools import partial

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmspm  # noqa: F401
from mmspm.analysis import backbone_token, display_name, name_token
from mmspm.builder import build_model
from mmspm.models.families import FAMILIES
from mmspm.models.spm_variants import VARIANT_ARGS
from mmspm.testing import use_naive_spm

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

SIZES = dict(t='tiny', s='small', m='medium', l='large')


def sdpa_flops(inputs, outputs) -> int:
    """q @ k^T and attn @ v of scaled_dot_product_attention."""
    q, k = (i.type().sizes() for i in inputs[:2])
    *batch, n, d = q
    m = k[-2]
    count = 1
    for b in batch:
        count *= b
    return 2 * count * n * m * d


def count(model: torch.nn.Module, inputs) -> float:
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flops)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analyzer.total() / 1e9


def params(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def build(config: str):
    return build_model(Config.fromfile(osp.join(ROOT, config))).eval()


def backbones(sizes) -> None:
    print('| model (224x224) | Params (M) | FLOPs (G) |')
    print('|---|---|---|')
    x = torch.randn(1, 3, 224, 224)
    for s in sizes:
        model = build(f'configs/imagenet/spm-pvt-{s}_8xb128_in1k.py')
        model.forward = partial(model.forward, mode='tensor')
        print(f'| SPM-PVT-{s.upper()} classifier (mmspm) | {params(model):.2f} | '
              f'{count(model, (x, )):.2f} |')
        use_naive_spm(model.backbone)
        print(f'| SPM-PVT-{s.upper()} classifier (naive reference SPM ops) | '
              f'{params(model):.2f} | {count(model, (x, )):.2f} |')
    for s in sizes:
        init_default_scope('mmdet')
        from mmdet.registry import MODELS
        depths = mmspm.models.ARCH_SETTINGS[SIZES[s]]['depths']
        pvt = MODELS.build(dict(type='PyramidVisionTransformer', num_layers=list(depths)))
        print(f'| PVT-{s.upper()} dense backbone (mmdet) | {params(pvt):.2f} | '
              f'{count(pvt.eval(), (x, )):.2f} |')
        spm = MODELS.build(dict(type='SPMPVT', arch=SIZES[s])).eval()
        print(f'| SPM-PVT-{s.upper()} dense backbone (mmspm) | {params(spm):.2f} | '
              f'{count(spm, (x, )):.2f} |')


def det_row(config: str, label: str) -> str:
    from mmdet.testing import demo_mm_inputs
    det = build(config)
    data = det.data_preprocessor(demo_mm_inputs(1, [[3, 800, 1280]], num_items=[1]), False)
    det.forward = partial(det.forward, data_samples=data['data_samples'], mode='tensor')
    return (f'| Mask R-CNN {label} | 800x1280 | {params(det):.2f} | '
            f'{count(det, (data["inputs"], )):.1f} |')


def seg_row(config: str, label: str) -> str:
    seg = build(config)
    seg.forward = partial(seg.forward, mode='tensor')
    return (f'| Semantic FPN {label} | 512x512 | {params(seg):.2f} | '
            f'{count(seg, (torch.randn(1, 3, 512, 512), )):.1f} |')


def models(sizes) -> None:
    print('| model | input | Params (M) | FLOPs (G) |')
    print('|---|---|---|---|')
    for s in sizes:
        for prefix in ('pvt', 'spm-pvt'):
            label = f'{prefix.upper()}-{s.upper()}'
            print(det_row(f'configs/mask_rcnn/mask-rcnn_{prefix}-{s}_fpn_1x_coco.py', label))
            print(seg_row(f'configs/semantic_fpn/fpn_{prefix}-{s}_8xb2-40k_ade20k-512x512.py',
                          label))


def plugins() -> None:
    """Each plugin family of mmspm.models.families: its compared member and
    the SPM one, as dense backbones and in the detection, segmentation and
    classification configs named after the member (``swin-t`` ...)."""
    from mmdet.registry import MODELS
    print('| model | input | Params (M) | FLOPs (G) |')
    print('|---|---|---|---|')
    x = torch.randn(1, 3, 224, 224)
    for family in (f for f in FAMILIES if f.is_plugin):
        config = backbone_token(dict(type=family.baselines[0], **family.compared))
        name = display_name(config)
        init_default_scope('mmdet')
        for label, kind in ((name, family.baselines[0]), (f'SPM-{name}', family.spm.__name__)):
            model = MODELS.build(dict(type=kind, **family.compared))
            model.eval()  # not chained: mmdet's SwinTransformer.eval() returns None
            print(f'| {label} dense backbone | 224x224 | {params(model):.2f} | '
                  f'{count(model, (x, )):.2f} |')
        for prefix, label in (('', name), ('spm-', f'SPM-{name}')):
            print(det_row(f'configs/mask_rcnn/mask-rcnn_{prefix}{config}_fpn_1x_coco.py', label))
            print(seg_row(f'configs/semantic_fpn/fpn_{prefix}{config}_8xb2-40k_ade20k-512x512.py',
                          label))
        cls = build(f'configs/imagenet/spm-{config}_8xb128_in1k.py')
        cls.forward = partial(cls.forward, mode='tensor')
        print(f'| SPM-{name} classifier | 224x224 | {params(cls):.2f} | '
              f'{count(cls, (x, )):.2f} |')


# The ablation configs in the order of the paper's ablations
# (configs/imagenet/ablations/README.md).
ABLATIONS = ('spm-pvt-t-nospm', 'spm-pvt-t-spm1', 'spm-pvt-t-spm3', 'spm-pvt-t-spm12',
             'spm-pvt-t-gle-conv', 'spm-pvt-t-gle-avgpool', 'spm-pvt-t-guide-cls',
             'spm-pvt-t-guide-gap', 'spm-pvt-t-gtg3', 'spm-pvt-t-gtg5', 'spm-pvt-t-gtg9')


def ablations() -> None:
    print('| model (224x224) | option | Params (M) | FLOPs (G) |')
    print('|---|---|---|---|')
    x = torch.randn(1, 3, 224, 224)
    found = {osp.basename(p)[:-len('_8xb128_in1k.py')]
             for p in glob.glob(osp.join(ROOT, 'configs/imagenet/ablations/*.py'))}
    if found != set(ABLATIONS):
        raise SystemExit(f'get_flops.py: ABLATIONS lists {sorted(ABLATIONS)}, '
                         f'configs/imagenet/ablations has {sorted(found)}; list each once.')
    configs = ['configs/imagenet/spm-pvt-t_8xb128_in1k.py'] + [
        f'configs/imagenet/ablations/{name}_8xb128_in1k.py' for name in ABLATIONS]
    for config in configs:
        model = build(config)
        model.forward = partial(model.forward, mode='tensor')
        backbone = Config.fromfile(osp.join(ROOT, config)).model.backbone
        option = ', '.join(f'`{k}={backbone[k]!r}`' for k in VARIANT_ARGS if k in backbone)
        name = display_name(name_token(osp.basename(config)))
        print(f'| {name} classifier | {option or "none (the full model)"} | '
              f'{params(model):.2f} | {count(model, (x, )):.2f} |')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--what', nargs='+',
                        default=['backbones', 'models', 'plugins', 'ablations'],
                        choices=['backbones', 'models', 'plugins', 'ablations'])
    parser.add_argument('--archs', nargs='+', default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    with torch.no_grad():
        if 'backbones' in args.what:
            backbones(args.archs)
            print()
        if 'models' in args.what:
            models(args.archs)
            print()
        if 'plugins' in args.what:
            plugins()
            print()
        if 'ablations' in args.what:
            ablations()


if __name__ == '__main__':
    main()
