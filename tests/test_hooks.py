"""ReferenceCheckpointHook: the runner's load_from / --checkpoint path takes
the authors' key layout; other checkpoints pass unchanged."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmspm.safe_load import CheckpointError
from tests.utils import ROOT, assert_dense_equals_reference, reference_pvt_v1_state

DET = 'configs/mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py'
CLS = 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'


def runner_for(config: str, tmp_path, hooks=None) -> Runner:
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.work_dir = str(tmp_path / 'work')
    if 'backbone' in cfg.model and 'init_cfg' in cfg.model.backbone:
        cfg.model.backbone.init_cfg = None
    if hooks is not None:
        cfg.custom_hooks = hooks
    return Runner.from_cfg(cfg)


def test_load_from_full_detector_and_raw_reference(ref_tiny, tmp_path):
    """Runner.load_checkpoint (what `load_from` and `mim test --checkpoint`
    run) with a full mmdet checkpoint and with a bare reference checkpoint
    nested under 'model', as the authors save them."""
    ref_path = tmp_path / 'ref.pth'
    torch.save({'model': ref_tiny.state_dict()}, ref_path)
    runner = runner_for(DET, tmp_path)
    runner.load_checkpoint(str(ref_path))
    assert_dense_equals_reference(runner.model.backbone.eval(), ref_tiny)

    full = tmp_path / 'det.pth'
    torch.save({'state_dict': runner.model.state_dict(), 'meta': {'epoch': 12}}, full)
    fresh = runner_for(DET, tmp_path / 'b')
    fresh.load_checkpoint(str(full))
    assert_dense_equals_reference(fresh.model.backbone.eval(), ref_tiny)


def test_classifier_gets_the_reference_head(ref_tiny, tmp_path):
    ref_path = tmp_path / 'ref.pth'
    torch.save(ref_tiny.state_dict(), ref_path)
    runner = runner_for(CLS, tmp_path)
    runner.load_checkpoint(str(ref_path))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = runner.model.eval()(x, mode='tensor')
    torch.testing.assert_close(ours, ref_tiny(x), atol=1e-4, rtol=0)


def test_without_the_hook_nothing_is_renamed(ref_tiny, tmp_path):
    """The conversion is the hook's, visible in the config: a runner without
    it leaves the reference keys unmatched (mmengine warns), the backbone
    untouched."""
    ref_path = tmp_path / 'ref.pth'
    torch.save({'model': ref_tiny.state_dict()}, ref_path)
    runner = runner_for(DET, tmp_path, hooks=[])
    before = runner.model.backbone.pos_embeds[0].clone()
    runner.load_checkpoint(str(ref_path))
    assert torch.equal(runner.model.backbone.pos_embeds[0], before)


def test_reference_checkpoint_into_a_model_without_spmpvt(ref_tiny, tmp_path):
    ref_path = tmp_path / 'ref.pth'
    torch.save(ref_tiny.state_dict(), ref_path)
    runner = runner_for('configs/mask_rcnn/mask-rcnn_pvt-t_fpn_1x_coco.py', tmp_path)
    with pytest.raises(CheckpointError, match='exactly one SPMPVT'):
        runner.load_checkpoint(str(ref_path))


def test_pvt_v1_checkpoint_is_refused_by_load_from(ref_tiny, tmp_path):
    """The authors' names with PVT's convolution patch embeddings: loading it
    whole would leave every SPM layer untrained."""
    torch.save(reference_pvt_v1_state(ref_tiny), tmp_path / 'pvt_tiny.pth')
    runner = runner_for(DET, tmp_path)
    with pytest.raises(CheckpointError, match='from_pvt_v1=True'):
        runner.load_checkpoint(str(tmp_path / 'pvt_tiny.pth'))
