"""ReferenceCheckpointHook: the runner's load_from / --checkpoint path takes
the authors' key layout; other checkpoints pass unchanged. RNGStateHook:
when it gathers the processes' generator states. mmspm.rng_states: restored
states repeat the draws, also after a weights_only checkpoint round trip."""
import io
import os.path as osp
import random

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import DataLoader, TensorDataset

from mmspm import RNGStateHook
from mmspm.rng_states import (capture_rng_states, restore_numpy_and_python_rng_states,
                              restore_torch_rng_states)
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


class RecordingRNGStateHook(RNGStateHook):
    """RNGStateHook noting the iterations at which it gathers the processes'
    states (with one process there is nothing to gather)."""

    def __init__(self) -> None:
        super().__init__()
        self.gathered_at: list[int] = []

    def _gather(self, runner) -> None:
        self.gathered_at.append(runner.iter)


class Regression(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        return dict(loss=out.square().mean()) if mode == 'loss' else [out]


@pytest.mark.parametrize('by_epoch, expected', [
    # iterations 4, 8, 12 (runner.iter counts from 0 there), then the end of
    # the iteration-based loop's single "epoch"
    (False, [3, 7, 11, 12]),
    (True, [4, 8, 12]),  # the end of each 4-iteration epoch
])
def test_rng_states_gathered_only_before_checkpoints(by_epoch, expected, tmp_path):
    """One collective per checkpoint, not one per training iteration."""
    hook = RecordingRNGStateHook()
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2,
                        collate_fn=lambda batch: dict(inputs=torch.stack([b[0] for b in batch])))
    train_cfg = (dict(by_epoch=True, max_epochs=3) if by_epoch else
                 dict(by_epoch=False, max_iters=12))
    runner = Runner(model=Regression(), work_dir=str(tmp_path), train_dataloader=loader,
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                    train_cfg=train_cfg, custom_hooks=[hook],
                    default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=by_epoch,
                                                       interval=1 if by_epoch else 4)))
    runner.train()
    assert hook.gathered_at == expected


def torch_draws() -> list:
    draws = [torch.rand(3).tolist()]
    if torch.cuda.is_available():
        draws.append(torch.rand(3, device='cuda').tolist())
    return draws


def numpy_and_python_draws() -> list:
    # randn twice: the first returns the Gaussian cached at capture, the
    # second a fresh pair's first.
    return [random.random(), np.random.rand(), np.random.randn(), np.random.randn()]


def test_restored_rng_states_repeat_the_draws():
    np.random.randn()  # leaves the second of a Gaussian pair cached
    states = capture_rng_states()
    first = torch_draws(), numpy_and_python_draws()
    assert (torch_draws(), numpy_and_python_draws()) != first  # the generators move on
    # As checkpoints are read: weights_only.
    buffer = io.BytesIO()
    torch.save(states, buffer)
    buffer.seek(0)
    states = torch.load(buffer, weights_only=True)
    restore_torch_rng_states(states)
    assert torch_draws() == first[0]
    assert numpy_and_python_draws() != first[1]  # left alone by restore_torch_rng_states
    restore_numpy_and_python_rng_states(states)
    assert numpy_and_python_draws() == first[1]
