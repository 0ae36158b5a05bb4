"""mmspm.analysis: backbone names, backbones from configs and checkpoints, the
effective receptive field and attention weights the analysis tools draw."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from torch import nn

from mmspm.analysis import (attention_module, attention_probs, backbone_token,
                            build_backbone, build_model, contribution_square,
                            display_name, effective_receptive_field, load_image)
from mmspm.safe_load import CheckpointError
from tests.utils import ROOT

PVT_T = 'configs/mask_rcnn/mask-rcnn_pvt-t_fpn_1x_coco.py'
SPM_PVT_T = 'configs/mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py'


def config(path: str) -> Config:
    return Config.fromfile(osp.join(ROOT, path))


@pytest.mark.parametrize('path, name', [
    (PVT_T, 'PVT-T'),
    (SPM_PVT_T, 'SPM-PVT-T'),
    ('configs/mask_rcnn/mask-rcnn_pvt-l_fpn_1x_coco.py', 'PVT-L'),
    ('configs/semantic_fpn/fpn_spm-pvt-m_8xb2-40k_ade20k-512x512.py', 'SPM-PVT-M'),
    ('configs/semantic_fpn/fpn_swin-t_8xb2-40k_ade20k-512x512.py', 'Swin-T'),
    ('configs/mask_rcnn/mask-rcnn_spm-swin-t_fpn_1x_coco.py', 'SPM-Swin-T'),
    ('configs/mask_rcnn/mask-rcnn_pvtv2-b1_fpn_1x_coco.py', 'PVTv2-B1'),
    ('configs/imagenet/spm-pvtv2-b1_8xb128_in1k.py', 'SPM-PVTv2-B1'),
    ('configs/imagenet/spm-pvt-s_8xb128_in1k.py', 'SPM-PVT-S'),
])
def test_backbone_names(path, name):
    """Read from the backbone's arguments (and the class defaults), not the
    file name: the name token is the one the config's file name carries."""
    token = backbone_token(config(path).model.backbone)
    assert display_name(token) == name
    assert f'_{token}_' in f'_{osp.basename(path)}'


def test_unknown_sizes_are_not_named():
    assert backbone_token(dict(type='SPMPVT', arch=dict(depths=[1, 1, 1, 1]))) == 'spm-pvt-?'
    assert backbone_token(dict(type='mmdet.ResNet', depth=50)) == 'resnet'


def conv_stack() -> nn.Sequential:
    """3x3 convolutions with strides 1, 2, 1 and positive weights: the output
    pixel i of the last sees inputs 2i-4 .. 2i+4 (a 9-pixel field) and every
    one of them through positive paths only."""
    layers = nn.Sequential(nn.Conv2d(2, 3, 3, 1, 1), nn.Conv2d(3, 3, 3, 2, 1),
                           nn.Conv2d(3, 4, 3, 1, 1))
    for conv in layers:
        conv.weight.data.uniform_(0.1, 1)
    return layers


def test_erf_is_the_receptive_field_of_the_centre():
    torch.manual_seed(0)
    erf = effective_receptive_field(conv_stack(), [torch.randn(1, 2, 33, 33) for _ in range(3)])
    # Output 17x17, centre 8: inputs 12..20 on both axes.
    inside = np.zeros((33, 33), bool)
    inside[12:21, 12:21] = True
    assert (erf[inside] > 0).all()
    assert (erf[~inside] == 0).all()


def test_erf_follows_the_centre_of_an_odd_map():
    """A 31-pixel input gives a 16-pixel output whose centre (8) is not the
    input's: the field moves with it."""
    erf = effective_receptive_field(conv_stack(), [torch.randn(1, 2, 31, 31)])
    assert set(np.nonzero(erf.sum(0))[0]) == set(range(12, 21))


def test_contribution_square():
    point = np.zeros((33, 33))
    point[16, 16] = 1
    assert [contribution_square(point, f) for f in (0.2, 0.9, 1.0)] == [1, 1, 1]
    uniform = np.zeros((33, 33))
    uniform[12:21, 12:21] = 1  # 81 pixels: 3x3 holds 11%, 5x5 31%, 7x7 60%
    assert [contribution_square(uniform, f) for f in (0.1, 0.2, 0.5, 0.9, 1.0)] == [3, 5, 7, 9, 9]
    with pytest.raises(ValueError, match='fraction'):
        contribution_square(uniform, 0)


@pytest.fixture(scope='module', params=[PVT_T, SPM_PVT_T])
def backbone(request):
    torch.manual_seed(0)
    return build_backbone(config(request.param))


def test_attention_rows_are_distributions_and_are_the_ones_used(backbone):
    """Every query's weights sum to 1 over the keys, and the block's output
    is the value-weighted sum with exactly these weights."""
    x = torch.randn(1, 3, 96, 80)
    probs, hw, grid = attention_probs(backbone, x, stage=1, block=0)
    attn = attention_module(backbone, 1, 0)
    mha = getattr(attn, 'attn', None)
    # Stride 8, keys pooled 4x4: both drop the last 2 columns, as mmdet's PVT.
    assert hw == (12, 10)
    assert grid == (3, 2)
    assert probs.shape == (2, 120, grid[0] * grid[1])
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 120))
    assert not torch.allclose(probs[:, 0], probs[:, -1]), 'all queries alike'

    seen = {}
    if isinstance(mha, nn.MultiheadAttention):  # mmdet: (tokens, batch, channels)
        hook = mha.register_forward_hook(
            lambda m, args, kwargs, out: seen.update(v=kwargs['value'], out=out[0]),
            with_kwargs=True)
        with torch.no_grad():
            backbone(x)
        hook.remove()
        w_v, b_v = mha.in_proj_weight[256:], mha.in_proj_bias[256:]
        v = (seen['v'][:, 0] @ w_v.T + b_v).view(-1, 2, 64).transpose(0, 1)
        mixed = (probs @ v).transpose(0, 1).reshape(-1, 128)
        expected = mha.out_proj(mixed)
        torch.testing.assert_close(seen['out'][:, 0], expected, atol=1e-5, rtol=1e-4)
    else:
        hooks = [attn.kv.register_forward_hook(lambda m, a, out: seen.update(kv=out)),
                 attn.proj.register_forward_hook(lambda m, a, out: seen.update(out=out))]
        with torch.no_grad():
            backbone(x)
        for hook in hooks:
            hook.remove()
        v = seen['kv'][0].view(-1, 2, 2, 64)[:, 1].transpose(0, 1)
        expected = attn.proj((probs @ v).transpose(0, 1).reshape(-1, 128))
        torch.testing.assert_close(seen['out'][0], expected, atol=1e-5, rtol=1e-4)


def test_attention_of_a_missing_block_or_backbone_is_refused(backbone):
    with pytest.raises(ValueError, match='stage 2 has 2 blocks; block 3'):
        attention_module(backbone, 1, 2)
    swin = build_backbone(config('configs/mask_rcnn/mask-rcnn_swin-t_fpn_1x_coco.py'))
    with pytest.raises(ValueError, match='SPM-PVT, PVT and PVTv2'):
        attention_module(swin, 1, 0)


def test_build_backbone_loads_a_detector_checkpoint(tmp_path):
    """mmdet's PVT from a whole Mask R-CNN checkpoint: the backbone's tensors."""
    torch.manual_seed(1)
    cfg = config(PVT_T)
    cfg.model.backbone.init_cfg = None
    detector = build_model(cfg)
    detector.init_weights()
    path = tmp_path / 'detector.pth'
    torch.save({'state_dict': detector.state_dict()}, path)
    torch.manual_seed(2)
    loaded = build_backbone(cfg, str(path))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, detector.backbone.state_dict()[k]), k
    assert not loaded.training

    torch.save({'state_dict': {'conv.weight': torch.zeros(1)}}, tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match='does not fit the backbone'):
        build_backbone(cfg, str(tmp_path / 'other.pth'))


def test_load_image_is_what_the_data_preprocessor_makes(tmp_path):
    """The image normalised as mmdet's own DetDataPreprocessor does it (from a
    BGR image, as LoadImageFromFile reads)."""
    cfg = config(PVT_T)
    rng = np.random.default_rng(0)
    path = str(tmp_path / 'image.png')
    mmcv.imwrite(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), path)
    rgb, x = load_image(path, (32, 24), cfg)
    assert rgb.shape == (32, 24, 3) and x.shape == (1, 3, 32, 24)
    preprocessor = build_model(cfg).data_preprocessor
    bgr = torch.from_numpy(mmcv.imresize(mmcv.imread(path), (24, 32))).permute(2, 0, 1)
    expected = preprocessor(dict(inputs=[bgr], data_samples=None))['inputs']
    torch.testing.assert_close(x, expected[..., :32, :24])
