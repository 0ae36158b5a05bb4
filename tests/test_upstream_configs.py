"""The upstream codebases' own configs, as shipped in the installed wheels
(``<package>/.mim/configs``, so the test follows them when they change),
with only ``model.backbone.type`` changed to an SPM backbone: each distinct
model builds, takes a training step (its loss on a one- or two-image batch made
through the config's data preprocessor, gradients reaching the SPM layers)
and predicts.

Besides the type, only what a CPU test needs differs from the shipped model:
no pretrained weights are fetched (``init_weights`` is not called), SyncBN
(GPU and distributed only) is plain BN, mmseg's preprocessor pads to the
small test image instead of to the 512 x 512 crop, and two-stage detectors
sample and keep fewer RoIs (mmcv's RoIAlign is slow on a CPU).
"""
import copy
import glob
import json
import os.path as osp
import re
from importlib.util import find_spec

import pytest
import torch
from mmengine.config import Config

import mmspm
from mmspm.builder import build_model
from mmspm.models.spm import StepwisePatchMerging
from tests.utils import seg_sample

# (package, configs, the upstream backbone type they name, the SPM type)
SWAPS = [
    ('mmdet', 'swin/*.py', 'SwinTransformer', 'SPMSwinTransformer'),
    ('mmseg', 'swin/*.py', 'SwinTransformer', 'SPMSwinTransformer'),
    ('mmdet', 'pvt/*pvtv2*.py', 'PyramidVisionTransformerV2', 'SPMPVTv2'),
    ('mmdet', 'pvt/retinanet_pvt-*.py', 'PyramidVisionTransformer', 'SPMPVT'),
    ('mmpretrain', 'swin_transformer/*.py', 'SwinTransformer', 'SPMSwinTransformer'),
]
# Shipped configs whose own model (upstream backbone) cannot be built on a
# stack: (stack, config) -> the error it raises. The test pins that instead
# (and fails, saying to drop the entry, once the stack fixes it).
BROKEN_UPSTREAM = {
    # mmseg 1.4's SegDataPreProcessor derives from mmengine's
    # ImgDataPreprocessor, which takes 1 or 3 channels: LEVIR's image pairs
    # have 6.
    ('onedl', 'swin-tiny-patch4-window7_upernet_1xb8-20k_levir-256x256.py'):
        '`mean` should have 1 or 3 values',
}
# The smallest member of each family runs with the fast tests, the others
# (several seconds to a minute each on a CPU) with the slow ones.
FAST = ('swin-t', 'swin-tiny', 'pvtv2-b0', 'pvt-t')


def configs_dir(package: str) -> str:
    return osp.join(osp.dirname(find_spec(package).origin), '.mim', 'configs')


def swapped(path: str, upstream: str, ours: str) -> Config:
    cfg = Config.fromfile(path)
    backbone = cfg.model.backbone
    assert backbone.type.split('.')[-1] == upstream, f'{path}: {backbone.type}'
    backbone.type = ours
    return cfg


def distinct_models() -> list:
    """One case per distinct model among the configs (many differ only in
    data or schedule), with the configs it stands for."""
    cases = {}
    for package, pattern, upstream, ours in SWAPS:
        paths = sorted(glob.glob(osp.join(configs_dir(package), pattern)))
        assert paths, f'no {pattern} in {configs_dir(package)}'
        for path in paths:
            cfg = swapped(path, upstream, ours)
            model = copy.deepcopy(cfg.model)
            model.backbone.pop('init_cfg', None)
            key = (package, json.dumps(model.to_dict(), sort_keys=True, default=str))
            case = cases.setdefault(key, (package, path, upstream, ours, []))
            case[-1].append(osp.basename(path))
    return [pytest.param(*case, id=osp.basename(case[1]),
                         marks=() if any(f in osp.basename(case[1]) for f in FAST)
                         else pytest.mark.slow)
            for case in cases.values()]


CASES = distinct_models()


def fewer_rois(model: dict) -> None:
    """RoI budgets of a two-stage detector's train/test settings cut to a few."""
    train, test = model.get('train_cfg') or {}, model.get('test_cfg') or {}
    if 'rcnn' in train:
        train['rcnn']['sampler']['num'] = 16
        train['rpn_proposal']['max_per_img'] = 32
    if 'rcnn' in test:
        test['rpn']['max_per_img'] = 32
        test['rcnn']['max_per_img'] = 8


def batch(package: str, cfg: Config, size: int) -> dict:
    """A batch as the config's dataloader gives it: one image, two for mmseg
    (its decode heads' pooling branch has BatchNorms on 1 x 1 maps), of as
    many channels as the preprocessor normalises (6: LEVIR's image pairs)."""
    channels = len(cfg.model.get('data_preprocessor', cfg.get('data_preprocessor')).mean)
    image = torch.randint(0, 256, (channels, size, size), dtype=torch.uint8)
    if package == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        head = cfg.model.get('roi_head', {}).get('bbox_head', cfg.model.get('bbox_head'))
        return demo_mm_inputs(1, [(3, size, size)], num_items=[3],
                              num_classes=head.num_classes,
                              with_mask='mask_head' in cfg.model.get('roi_head', {}))
    if package == 'mmseg':
        sample = seg_sample((size, size), cfg.model.decode_head.num_classes)
        return dict(inputs=[image, image.flip(1)], data_samples=[sample, sample.clone()])
    from mmpretrain.structures import DataSample
    return dict(inputs=[image], data_samples=[DataSample().set_gt_label(3)])


@pytest.mark.parametrize('package,path,upstream,ours,names', CASES)
def test_upstream_config_trains_and_predicts_with_the_spm_backbone(package, path, upstream,
                                                                   ours, names):
    broken = BROKEN_UPSTREAM.get((mmspm.STACK, osp.basename(path)))
    if broken is not None:
        own = Config.fromfile(path)
        own.model.backbone.pop('init_cfg', None)
        with pytest.raises(Exception, match=re.escape(broken)):
            build_model(own)
        return
    cfg = swapped(path, upstream, ours)
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.backbone.pop('pretrained', None)
    fewer_rois(cfg.model)
    # mmpretrain's classification Swin refuses maps below its window size
    # (pad_small_map=False): its configs get images of their own size.
    # (mmseg's heads, 512 channels at 1/4 resolution, are the slowest part.)
    size = dict(mmpretrain=cfg.model.backbone.get('img_size', 224), mmdet=128,
                mmseg=64)[package]
    if package == 'mmseg':
        cfg.model.data_preprocessor.size = (size, size)
    model = build_model(cfg)  # SyncBN made BN
    backbone = model.backbone
    # The configs this model stands for: names.
    assert type(backbone).__name__ == ours, names
    assert any(isinstance(m, StepwisePatchMerging) for m in backbone.modules())
    torch.manual_seed(0)
    model.train()
    data = model.data_preprocessor(batch(package, cfg, size), True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    spm = [p for m in backbone.modules() if isinstance(m, StepwisePatchMerging)
           for p in m.parameters()]
    assert spm and all(p.grad is not None and p.grad.abs().sum() > 0 for p in spm)
    model.eval()
    with torch.no_grad():
        outputs = model.val_step(batch(package, cfg, size))
    assert len(outputs) == len(data['data_samples'])
    prediction = dict(mmdet='pred_instances', mmseg='pred_sem_seg',
                      mmpretrain='pred_score')[package]
    assert prediction in outputs[0]
