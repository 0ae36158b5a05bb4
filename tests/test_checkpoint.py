"""Checkpoint interop: reference layout, conversion, every init path, safety."""
import copy
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from mmspm import SPMPVT
from mmspm.checkpoint import CheckpointError, load_backbone_checkpoint, load_file
from tests.conftest import ROOT, reference_model
from tests.reference import ARCHS

CONVERTER = 'tools/model_converters/spm2mmspm.py'


def convert(src, dst, *extra, ok=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, CONVERTER, str(src), str(dst), *extra],
                          cwd=ROOT, capture_output=True, text=True)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope='module')
def ref_tiny():
    torch.manual_seed(0)
    return reference_model('tiny')


@pytest.fixture(scope='module')
def ref_file(ref_tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp('ref') / 'spm_pvt_tiny_ref.pth'
    torch.save({'model': ref_tiny.state_dict()}, path)
    return path


def dense_from(checkpoint) -> SPMPVT:
    model = SPMPVT('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    model.init_weights()
    return model.eval()


def assert_dense_equals_reference(model: SPMPVT, ref, hw=(224, 224)):
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        maps, _ = ref.forward_features(x)
        outs = model(x)
    for ours, theirs in zip(outs[:3], maps):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize('arch', list(ARCHS))
def test_conversion_round_trip(arch, tmp_path):
    torch.manual_seed(1)
    ref = reference_model(arch)
    src = tmp_path / 'ref.pth'
    torch.save({'state_dict': ref.state_dict()}, src)
    out = convert(src, tmp_path / 'converted.pth').stdout
    assert f'SPM-PVT-{arch}' in out
    assert 'patch_embed2.spm.msa.local_conv_9.weight -> backbone.patch_embeds.1.msa.local_convs.3.weight' in out
    converted = torch.load(tmp_path / 'converted.pth', weights_only=True)
    assert set(converted) == {k for k in converted if k.startswith(('backbone.', 'head.fc.'))}
    model = SPMPVT(arch, with_cls_token=True)
    model.load_state_dict({k[9:]: v for k, v in converted.items() if k.startswith('backbone.')},
                          strict=True)
    # every reference tensor arrives unchanged under its new name
    ours = model.state_dict()
    ref_state = ref.state_dict()
    for old, new in (('patch_embed3.spm.gle.attn.qkv.weight', 'patch_embeds.2.gle.qkv.weight'),
                     ('block4.1.attn.kv.bias', 'stages.3.1.attn.kv.bias'),
                     ('pos_embed4', 'pos_embeds.3'), ('cls_token', 'cls_token'),
                     ('patch_embed1.norm.weight', 'patch_embeds.0.norm.weight')):
        torch.testing.assert_close(ours[new], ref_state[old], rtol=0, atol=0)
    torch.testing.assert_close(converted['head.fc.weight'], ref_state['head.weight'])
    assert sum(v.numel() for v in converted.values()) == sum(
        v.numel() for k, v in ref_state.items() if 'num_batches_tracked' not in k) + sum(
        v.numel() for k, v in ref_state.items() if 'num_batches_tracked' in k)


def test_classifier_parity_with_imagenet_config(ref_tiny, ref_file, tmp_path):
    """configs/imagenet/spm-pvt-t loading a converted checkpoint gives the
    reference classifier's logits."""
    from mmpretrain.registry import MODELS
    convert(ref_file, tmp_path / 'converted.safetensors')
    cfg = Config.fromfile(osp.join(ROOT, 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'))
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
    load_checkpoint(model, str(tmp_path / 'converted.safetensors'), strict=True)
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = model(x, mode='tensor')
        theirs = ref_tiny(x)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize('wrap', ['top', 'model', 'state_dict'])
def test_dense_init_from_reference_layout(ref_tiny, wrap, tmp_path):
    state = ref_tiny.state_dict()
    path = tmp_path / 'ref.pth'
    torch.save(state if wrap == 'top' else {wrap: state}, path)
    assert_dense_equals_reference(dense_from(path), ref_tiny)
    assert_dense_equals_reference(dense_from(path), ref_tiny, hw=(256, 192))


def test_dense_init_from_converted_and_safetensors(ref_tiny, ref_file, tmp_path):
    for name in ('c.pth', 'c.safetensors'):
        convert(ref_file, tmp_path / name)
        assert_dense_equals_reference(dense_from(tmp_path / name), ref_tiny)


@pytest.mark.parametrize('config', [
    'mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py',
    'semantic_fpn/fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py',
])
def test_dense_configs_init_with_no_missing_backbone_keys(config, ref_tiny, ref_file):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg.checkpoint = str(ref_file)
    if cfg.default_scope == 'mmseg':
        model_cfg.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    init_default_scope(cfg.default_scope)
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(model_cfg)
    model.init_weights()
    assert_dense_equals_reference(model.backbone.eval(), ref_tiny)
    missing, unexpected = load_backbone_checkpoint(SPMPVT('tiny'), str(ref_file))
    assert missing == [] and unexpected == []


def test_load_from_full_detector_and_raw_reference(ref_tiny, ref_file, tmp_path):
    """mmengine's load_checkpoint (what `load_from` runs) with a full mmdet
    checkpoint and with a bare reference checkpoint."""
    from mmdet.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmdet')
    donor = MODELS.build(cfg.model)
    donor.backbone.load_state_dict(dense_from(ref_file).state_dict())
    full = tmp_path / 'det.pth'
    torch.save({'state_dict': donor.state_dict(), 'meta': {'epoch': 12}}, full)
    for source in (full, ref_file):
        det = MODELS.build(cfg.model)
        load_checkpoint(det, str(source), strict=False)
        assert_dense_equals_reference(det.backbone.eval(), ref_tiny)


def test_mmpretrain_classifier_into_dense(ref_tiny, ref_file, tmp_path):
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'))
    init_default_scope('mmpretrain')
    clf = MODELS.build(cfg.model)
    convert(ref_file, tmp_path / 'c.pth')
    load_checkpoint(clf, str(tmp_path / 'c.pth'), strict=True)
    path = tmp_path / 'mmpretrain_runner_style.pth'
    torch.save({'state_dict': clf.state_dict(), 'meta': {'epoch': 300}}, path)
    assert_dense_equals_reference(dense_from(path), ref_tiny)


def test_missing_extra_and_misshaped_keys(ref_tiny, tmp_path):
    state = dict(ref_tiny.state_dict())
    # missing: converter refuses; dense init loads the rest and logs it
    missing = dict(state)
    del missing['block2.1.mlp.fc1.weight']
    torch.save(missing, tmp_path / 'missing.pth')
    err = convert(tmp_path / 'missing.pth', tmp_path / 'o1.pth', ok=False).stderr
    assert 'stages.1.1.mlp.fc1.weight' in err
    missing_keys, _ = load_backbone_checkpoint(SPMPVT('tiny'), str(tmp_path / 'missing.pth'))
    assert missing_keys == ['stages.1.1.mlp.fc1.weight']

    extra = dict(state, **{'block1.0.attn.extra.weight': torch.zeros(2)})
    torch.save(extra, tmp_path / 'extra.pth')
    err = convert(tmp_path / 'extra.pth', tmp_path / 'o2.pth', ok=False).stderr
    assert 'stages.0.0.attn.extra.weight' in err
    _, unexpected = load_backbone_checkpoint(SPMPVT('tiny'), str(tmp_path / 'extra.pth'))
    assert unexpected == ['stages.0.0.attn.extra.weight']

    unknown = dict(state, **{'decoder.weight': torch.zeros(2)})
    torch.save(unknown, tmp_path / 'unknown.pth')
    assert "'decoder.weight'" in convert(tmp_path / 'unknown.pth', tmp_path / 'o3.pth',
                                         ok=False).stderr

    shaped = dict(state, **{'block3.0.mlp.fc2.weight': torch.zeros(320, 10)})
    torch.save(shaped, tmp_path / 'shaped.pth')
    with pytest.raises(CheckpointError, match=r"stages\.2\.0\.mlp\.fc2\.weight.*\(320, 10\).*\(320, 1280\)"):
        dense_from(tmp_path / 'shaped.pth')


def test_other_arch_is_refused_with_key_and_shapes(tmp_path):
    small = reference_model('small')
    torch.save(small.state_dict(), tmp_path / 'small.pth')
    # SPM-PVT sizes share all shapes: the depths tell them apart
    with pytest.raises(CheckpointError, match=r'\(3, 4, 6, 3\) blocks per stage, the model '
                                              r'\(2, 2, 2, 2\).*SPM-PVT-small'):
        dense_from(tmp_path / 'small.pth')
    # a custom wider arch: the first mismatched tensor, with both shapes
    wide = dict(embed_dims=(64, 128, 320, 640), num_heads=(1, 2, 5, 8),
                mlp_ratios=(8, 8, 4, 4), depths=(3, 4, 6, 3), sr_ratios=(8, 4, 2, 1))
    model = SPMPVT(wide, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'small.pth')))
    with pytest.raises(CheckpointError, match=r"'pos_embeds\.3' has shape \(1, 49, 512\) "
                                              r"but the model expects \(1, 49, 640\)"):
        model.init_weights()


def test_unrelated_checkpoint_is_rejected(tmp_path):
    import torchvision
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / 'resnet.pth')
    with pytest.raises(CheckpointError, match='no layout mmspm knows'):
        dense_from(tmp_path / 'resnet.pth')
    # ResNet weights under backbone.* (an mmdet R50 detector, say)
    state = {f'backbone.{k}': v for k, v in torchvision.models.resnet18().state_dict().items()}
    torch.save({'state_dict': state}, tmp_path / 'det_resnet.pth')
    with pytest.raises(CheckpointError, match='not an SPM-PVT checkpoint'):
        dense_from(tmp_path / 'det_resnet.pth')


class Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_pickle_payload_is_refused_everywhere(ref_tiny, tmp_path):
    target = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    state = dict(ref_tiny.state_dict())
    torch.save({'state_dict': state, 'meta': Payload(str(target))}, path)
    with pytest.raises(CheckpointError, match='refused'):
        dense_from(path)
    err = convert(path, tmp_path / 'o.pth', ok=False).stderr
    assert 'refused' in err
    with pytest.raises(Exception, match='Weights only load failed'):
        load_checkpoint(SPMPVT('tiny'), str(path))  # the load_from / resume path
    assert not target.exists()
    assert not (tmp_path / 'o.pth').exists()


def test_truncated_and_corrupt_files(ref_file, tmp_path):
    data = ref_file.read_bytes()
    (tmp_path / 'truncated.pth').write_bytes(data[:len(data) // 3])
    (tmp_path / 'garbage.pth').write_bytes(b'not a checkpoint at all' * 10)
    (tmp_path / 'garbage.safetensors').write_bytes(b'\x00' * 64)
    for name in ('truncated.pth', 'garbage.pth', 'garbage.safetensors'):
        with pytest.raises(CheckpointError, match='corrupt or truncated|not a readable'):
            load_file(str(tmp_path / name))
    with pytest.raises(CheckpointError, match='does not exist'):
        load_file(str(tmp_path / 'nope.pth'))


def test_converter_never_overwrites(ref_file, tmp_path):
    dst = tmp_path / 'out.pth'
    dst.write_bytes(b'user data')
    assert 'exists' in convert(ref_file, dst, ok=False).stderr
    assert dst.read_bytes() == b'user data'
    convert(ref_file, dst, '--overwrite')
    assert 'backbone.cls_token' in torch.load(dst, weights_only=True)


def test_mim_test_mmpretrain_with_converted_checkpoint(ref_file, demo_data, tmp_path):
    from tests.test_end_to_end import metric, run
    convert(ref_file, tmp_path / 'c.pth')
    root = f'{demo_data}/imagenet'
    out = run('mim', 'test', 'mmpretrain', 'configs/imagenet/spm-pvt-t_8xb128_in1k.py',
              '--checkpoint', str(tmp_path / 'c.pth'), '--gpus', '0', '--work-dir',
              str(tmp_path / 'w'), '--cfg-options', f'test_dataloader.dataset.data_root={root}',
              'test_dataloader.batch_size=4', 'test_dataloader.num_workers=0',
              'test_dataloader.persistent_workers=False')
    assert 0.0 <= metric(out, 'accuracy/top1') <= 100.0


def test_loading_keeps_the_allow_list_registered(ref_file, tmp_path):
    """mmengine's own loads (resume, load_from) rely on the global allow-list:
    mmspm's loader must not remove it after use."""
    from mmengine.logging import HistoryBuffer
    load_file(str(ref_file))
    (tmp_path / 'garbage.pth').write_bytes(b'garbage')
    with pytest.raises(CheckpointError):
        load_file(str(tmp_path / 'garbage.pth'))
    assert HistoryBuffer in torch.serialization.get_safe_globals()
    path = tmp_path / 'runner_style.pth'
    buffer = HistoryBuffer()
    buffer.update(1e-4)
    torch.save({'message_hub': {'train/lr': buffer}}, path)
    assert isinstance(torch.load(path)['message_hub']['train/lr'], HistoryBuffer)
