"""mmspm.builder: a config's model as the Runner builds it, for tools and tests."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from torch import nn

from mmspm.builder import build_model
from tests.utils import ROOT

CLS = 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'
SEG = 'configs/semantic_fpn/fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py'


def config(path: str) -> Config:
    return Config.fromfile(osp.join(ROOT, path))


def test_classifier_takes_the_top_level_data_preprocessor():
    """mmpretrain configs keep the preprocessor beside the model, as the
    Runner reads them: its normalisation, not the classifier's default."""
    cfg = config(CLS)
    assert 'data_preprocessor' not in cfg.model
    pre = build_model(cfg).data_preprocessor
    assert type(pre).__name__ == 'ClsDataPreprocessor'
    assert pre.mean.flatten().tolist() == pytest.approx(cfg.data_preprocessor.mean)
    assert 'data_preprocessor' not in cfg.model  # the config is not changed


def test_sync_batchnorm_becomes_batchnorm_and_trains_in_one_process():
    cfg = config(SEG)
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    model = build_model(cfg, init_weights=True)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(isinstance(m, nn.SyncBatchNorm) for m in bns)
    # SyncBN would raise here without a process group.
    model.decode_head.train()(model.extract_feat(torch.randn(2, 3, 64, 64)))


def test_pretrained_checkpoint_is_read_only_when_asked(tmp_path):
    """The dense configs name an ImageNet checkpoint this test does not have:
    initialising reads it only with pretrained=True."""
    cfg = config(SEG)
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
    assert not osp.exists(cfg.model.backbone.init_cfg.checkpoint)
    torch.manual_seed(0)
    first = build_model(cfg, init_weights=True).backbone.state_dict()
    torch.manual_seed(1)
    second = build_model(cfg, init_weights=True).backbone.state_dict()
    assert any(not torch.equal(v, second[k]) for k, v in first.items()), 'no init ran'
    with pytest.raises(Exception, match='spm-pvt-t_8xb128_in1k'):
        build_model(cfg, init_weights=True, pretrained=True)
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'  # the config is not changed


def test_part_is_built_in_the_configs_scope():
    """A backbone dict of an mmpretrain config is built by mmpretrain's
    registry (whose SPMSwinTransformer is the one on mmpretrain's Swin)."""
    cfg = config('configs/imagenet/spm-swin-t_8xb128_in1k.py')
    backbone = build_model(cfg, dict(cfg.model.backbone))
    assert type(backbone).__module__ == 'mmspm.models.spm_swin_pretrain'
