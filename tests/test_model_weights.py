"""mmspm.model_weights (the whole-model loading of mmspm.deployment.load_model
and tools/analysis/show_predictions.py) loads checkpoints as tools/test.py
does: read without unpickling code, the SPM authors' layout renamed
(ReferenceCheckpointHook), and nothing silently left untrained."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmspm.builder import build_model
from mmspm.model_weights import load_model_weights
from mmspm.safe_load import CheckpointError
from tests.utils import ROOT, Payload, backbone_state

CONFIG = 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'


@pytest.fixture(scope='module')
def classifier_model():
    return build_model(Config.fromfile(osp.join(ROOT, CONFIG)))


def test_authors_layout_checkpoint_loads_backbone_and_head(classifier_model, ref_tiny, ref_file):
    load_model_weights(classifier_model, str(ref_file))
    ours = classifier_model.state_dict()
    for k, v in backbone_state(ref_tiny).items():
        assert torch.equal(ours[f'backbone.{k}'], v), k
    assert torch.equal(ours['head.fc.weight'], ref_tiny.head.weight)


def test_a_checkpoint_that_does_not_fit_is_refused(classifier_model, tmp_path):
    """A backbone-only checkpoint would leave the head untrained."""
    state = {k: v for k, v in classifier_model.state_dict().items() if k.startswith('backbone.')}
    torch.save({'state_dict': state}, tmp_path / 'x.pth')
    with pytest.raises(CheckpointError, match='missing keys.*head.fc.weight'):
        load_model_weights(classifier_model, str(tmp_path / 'x.pth'))


def test_pickled_code_is_not_run(classifier_model, tmp_path):
    marker = tmp_path / 'ran'
    torch.save({'state_dict': {'x': Payload(str(marker))}}, tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError, match='refused'):
        load_model_weights(classifier_model, str(tmp_path / 'evil.pth'))
    assert not marker.exists()
