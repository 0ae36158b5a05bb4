"""Every config parses, builds, and says the paper's recipe; every model family
takes a real loss step and a predict step on demo data of odd sizes."""
import copy
import glob
import importlib
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

from mmspm.analysis import backbone_token, name_token
from mmspm.builder import build_model
from mmspm.models.families import FAMILIES, Family, family_of
from tests.utils import ROOT

CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))
# The members of the plugin families that have configs (the ones the analysis
# tables compare): each SPM config is its baseline's with the backbone type
# changed (the imagenet ones have no baseline config).
PLUGIN_MEMBERS = [backbone_token(dict(type=f.baselines[0], **f.compared))
                  for f in FAMILIES if f.is_plugin]
ARCHS = dict(t='tiny', s='small', m='medium', l='large')
PVT_DEPTHS = dict(t=[2, 2, 2, 2], s=[3, 4, 6, 3], m=[3, 4, 18, 3], l=[3, 8, 27, 3])


def test_expected_configs_exist():
    names = {osp.relpath(c, osp.join(ROOT, 'configs')) for c in CONFIGS}
    for s in 'tsml':
        for prefix in ('spm-pvt', 'pvt'):
            assert f'mask_rcnn/mask-rcnn_{prefix}-{s}_fpn_1x_coco.py' in names
            assert f'semantic_fpn/fpn_{prefix}-{s}_8xb2-40k_ade20k-512x512.py' in names
        assert f'imagenet/spm-pvt-{s}_8xb128_in1k.py' in names
    for p in PLUGIN_MEMBERS:
        for prefix in ('spm-', ''):
            assert f'mask_rcnn/mask-rcnn_{prefix}{p}_fpn_1x_coco.py' in names
            assert f'semantic_fpn/fpn_{prefix}{p}_8xb2-40k_ade20k-512x512.py' in names
        assert f'imagenet/spm-{p}_8xb128_in1k.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.basename(p))
def test_config_builds_with_recipe(path):
    """Each config builds its backbone family's model (read from the config's
    backbone type, not its name), its name says that backbone, and it keeps
    the recipe of its family: the paper's for SPM-PVT and PVT v1, the
    baseline's for SPM on a plugin family."""
    cfg = Config.fromfile(path)
    name = osp.basename(path)[:-3]
    family, kind = family_of(cfg.model.backbone.type)
    model = build_model(cfg)
    if kind == 'spm':
        assert type(model.backbone).__name__ == family.spm.__name__
    else:
        assert type(model.backbone).__name__ in family.baselines
    assert name_token(name) == backbone_token(cfg.model.backbone), \
        f'{name}: the name says another backbone than the config builds'
    if family.token == 'pvt':
        _check_pvt_recipe(cfg, name, model)
    else:
        _check_plugin_recipe(cfg, path, family, model)


def _check_pvt_recipe(cfg: Config, name: str, model) -> None:
    backbone = cfg.model.backbone
    size = re.search(r'pvt-([tsml])', name)[1]
    if 'spm-pvt' in name:
        assert list(model.backbone.arch_settings['depths']) == PVT_DEPTHS[size]
        if 'demo' not in name and cfg.default_scope != 'mmpretrain':
            assert backbone.init_cfg == dict(
                type='Pretrained', checkpoint=f'checkpoints/spm-pvt-{size}_8xb128_in1k.pth')
    else:
        assert backbone.num_layers == PVT_DEPTHS[size]
    if 'demo' in name:
        return
    optimizer = cfg.optim_wrapper.optimizer
    if cfg.default_scope == 'mmdet':
        assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 1e-4, 1e-4)
        assert cfg.train_cfg.max_epochs == 12
        assert cfg.train_dataloader.batch_size == 2
        assert cfg.auto_scale_lr.base_batch_size == 16
        assert cfg.model.neck.in_channels == [64, 128, 320, 512]
        assert cfg.val_evaluator.type == 'CocoMetric'
        assert cfg.val_evaluator.metric == ['bbox', 'segm']
    elif cfg.default_scope == 'mmseg':
        assert (optimizer.type, optimizer.lr) == ('AdamW', 1e-4)
        assert cfg.train_cfg.max_iters == 40000
        assert cfg.train_dataloader.batch_size == 2
        assert [(s.type, s.power, s.end) for s in cfg.param_scheduler] == [('PolyLR', 0.9, 40000)]
        assert cfg.crop_size == (512, 512)
        assert cfg.model.decode_head.num_classes == 150
        test_resize = [t for t in cfg.test_pipeline if t.type == 'Resize'][0]
        assert min(test_resize.scale) == 512 and test_resize.keep_ratio
        assert cfg.val_evaluator.type == 'IoUMetric'
    else:
        assert backbone.with_cls_token and tuple(backbone.out_indices) == (3, )
        assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 1e-3, 0.05)
        assert cfg.train_cfg.max_epochs == 300
        assert cfg.train_dataloader.batch_size == 128
        assert cfg.auto_scale_lr.base_batch_size == 1024
        assert {a.type for a in cfg.model.train_cfg.augments} == {'Mixup', 'CutMix'}
        assert cfg.model.head.loss.type == 'LabelSmoothLoss'
        assert 'RandomErasing' in [t.type for t in cfg.train_pipeline]
        assert any(s.type == 'CosineAnnealingLR' for s in cfg.param_scheduler)
        assert [t for t in cfg.val_dataloader.dataset.pipeline
                if t.type == 'CenterCrop'][0].crop_size == 224


def _check_plugin_recipe(cfg: Config, path: str, family: Family, model) -> None:
    if cfg.default_scope == 'mmpretrain':
        assert tuple(cfg.model.backbone.out_indices) == (3, )
        assert cfg.model.neck.type == 'GlobalAveragePooling'
        optimizer = cfg.optim_wrapper.optimizer
        assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 1e-3, 0.05)
        assert cfg.train_cfg.max_epochs == 300
        return
    name = osp.basename(path)
    if 'spm-' in name:  # the baseline's recipe, to the letter
        baseline = Config.fromfile(path.replace('spm-', '')).to_dict()
        mine = Config.fromfile(path).to_dict()
        assert mine['model']['backbone'].pop('type') == family.spm.__name__
        assert baseline['model']['backbone'].pop('type').split('.')[-1] in family.baselines
        for d in (mine, baseline):
            d.pop('filename', None)
        assert mine == baseline
    if family.token == 'swin' and cfg.default_scope == 'mmdet':
        # mmdet's mask-rcnn_swin-t-p4-w7_fpn_1x_coco recipe
        optimizer = cfg.optim_wrapper.optimizer
        assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 1e-4, 0.05)
        assert cfg.model.backbone.drop_path_rate == 0.2
    model.backbone.eval()
    with torch.no_grad():
        maps = model.backbone(torch.randn(1, 3, 64, 64))
    assert cfg.model.neck.in_channels == [m.shape[1] for m in maps]
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'


def _demo_config(task: str, demo_data) -> Config:
    if task == 'det':
        cfg = Config.fromfile(osp.join(ROOT, 'configs/demo/mask-rcnn_spm-pvt-t_fpn_demo.py'))
        root = str(demo_data / 'coco') + '/'
    else:
        cfg = Config.fromfile(osp.join(ROOT, 'configs/demo/fpn_spm-pvt-t_demo.py'))
        root = str(demo_data / 'ade') + '/'
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = root
    return cfg


def _batches(cfg: Config):
    """Two training samples and one predict sample (unpadded test images of
    two sizes cannot be stacked)."""
    init_default_scope(cfg.default_scope)  # the datasets' transforms are looked up there
    datasets = importlib.import_module(f'{cfg.default_scope}.registry').DATASETS
    train = datasets.build(cfg.train_dataloader.dataset)
    val = datasets.build(cfg.val_dataloader.dataset)
    return (pseudo_collate([train[0], train[1]]),
            pseudo_collate([val[0]]))


def _untrained(config: str):
    """A real config and its model settings without the ImageNet init."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    return cfg, model_cfg


def _step(model, train_batch, val_batch):
    model.init_weights()
    model.train()
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-4))
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    losses = model.train_step(train_batch, optim)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    changed = [k for k, v in model.backbone.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed, 'the loss step did not update the backbone'
    model.eval()
    with torch.no_grad():
        return model.val_step(val_batch)


@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py',
    'mask_rcnn/mask-rcnn_pvt-t_fpn_1x_coco.py',
    'mask_rcnn/mask-rcnn_spm-swin-t_fpn_1x_coco.py',
    'mask_rcnn/mask-rcnn_spm-pvtv2-b1_fpn_1x_coco.py',
])
def test_detector_steps(config, demo_data):
    data_cfg = _demo_config('det', demo_data)
    cfg, model_cfg = _untrained(config)
    # The demo's three classes and proposal budget; no padding to 32 at test
    # time, so the backbone sees odd sizes.
    model_cfg.roi_head.bbox_head.num_classes = 3
    model_cfg.roi_head.mask_head.num_classes = 3
    model_cfg.train_cfg = data_cfg.model.train_cfg
    model_cfg.test_cfg = data_cfg.model.test_cfg
    model = build_model(cfg, model_cfg)
    train_batch, val_batch = _batches(data_cfg)
    model.data_preprocessor.pad_size_divisor = 1
    outputs = _step(model, train_batch, val_batch)
    h, w = val_batch['inputs'][0].shape[-2:]
    assert h % 32 or w % 32
    for out in outputs:
        pred = out.pred_instances
        assert pred.masks.shape[-2:] == out.ori_shape
        assert pred.bboxes.shape[1] == 4 and len(pred.labels) == len(pred.scores)


@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'semantic_fpn/fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py',
    'semantic_fpn/fpn_pvt-t_8xb2-40k_ade20k-512x512.py',
    'semantic_fpn/fpn_spm-swin-t_8xb2-40k_ade20k-512x512.py',
    'semantic_fpn/fpn_spm-pvtv2-b1_8xb2-40k_ade20k-512x512.py',
])
def test_segmentor_steps(config, demo_data):
    data_cfg = _demo_config('seg', demo_data)
    cfg, model_cfg = _untrained(config)
    model_cfg.data_preprocessor.size = data_cfg.crop_size
    model = build_model(cfg, model_cfg)
    train_batch, val_batch = _batches(data_cfg)
    outputs = _step(model, train_batch, val_batch)
    h, w = val_batch['inputs'][0].shape[-2:]
    assert h % 32 or w % 32
    for out in outputs:
        assert tuple(out.pred_sem_seg.data.shape[-2:]) == out.ori_shape
        assert out.seg_logits.data.shape[0] == 150


@pytest.mark.slow
@pytest.mark.parametrize('config', ['spm-pvt-t', 'spm-swin-t', 'spm-pvtv2-b1'])
def test_classifier_steps(config):
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(osp.join(ROOT, f'configs/imagenet/{config}_8xb128_in1k.py'))
    model = build_model(cfg)
    images = [torch.randint(0, 256, (3, 97, 113), dtype=torch.uint8) for _ in range(2)]
    batch = dict(inputs=images,
                 data_samples=[DataSample().set_gt_label(i) for i in (3, 7)])
    outputs = _step(model, batch, dict(inputs=images, data_samples=None))
    assert [tuple(o.pred_score.shape) for o in outputs] == [(1000, ), (1000, )]
    assert all(abs(float(o.pred_score.sum()) - 1) < 1e-4 for o in outputs)
