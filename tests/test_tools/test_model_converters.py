"""tools/model_converters/spm2mmspm.py run as a user runs it: every reference
tensor under its mmspm name, refusals, never overwriting, and the converted
checkpoint used by the ImageNet config and `mim test`."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from mmspm.builder import build_model
from mmspm.testing import ARCHS
from tests.utils import (FLOAT32, ROOT, Payload, assert_dense_equals_reference, dense_from,
                         metric, reference_model, run)

pytestmark = pytest.mark.slow

CONVERTER = 'tools/model_converters/spm2mmspm.py'


def convert(src, dst, *extra, ok=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, CONVERTER, str(src), str(dst), *extra],
                          cwd=ROOT, capture_output=True, text=True)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


@pytest.mark.parametrize('arch', list(ARCHS))
def test_conversion_round_trip(arch, tmp_path):
    from mmspm import SPMPVT
    torch.manual_seed(1)
    ref = reference_model(arch)
    src = tmp_path / 'ref.pth'
    torch.save({'state_dict': ref.state_dict()}, src)
    out = convert(src, tmp_path / 'converted.pth').stdout
    assert f'SPM-PVT-{arch}' in out
    assert ('patch_embed2.spm.msa.local_conv_9.weight -> '
            'backbone.patch_embeds.1.msa.local_convs.3.weight') in out
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
    """configs/imagenet/spm-pvt-t loading a converted checkpoint (through
    mmengine's load_checkpoint, as load_from does) gives the reference
    classifier's logits. (A .pth: torch 2.1's torch.load, which mmengine
    calls, does not read .safetensors files; torch 2.13's does.)"""
    convert(ref_file, tmp_path / 'converted.pth')
    cfg = Config.fromfile(osp.join(ROOT, 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'))
    model = build_model(cfg)
    load_checkpoint(model, str(tmp_path / 'converted.pth'), strict=True)
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = model(x, mode='tensor')
        theirs = ref_tiny(x)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_dense_init_from_converted_and_safetensors(ref_tiny, ref_file, tmp_path):
    for name in ('c.pth', 'c.safetensors'):
        convert(ref_file, tmp_path / name)
        assert_dense_equals_reference(dense_from(tmp_path / name), ref_tiny)


def test_missing_extra_and_unknown_keys_are_refused(ref_tiny, tmp_path):
    state = dict(ref_tiny.state_dict())
    missing = dict(state)
    del missing['block2.1.mlp.fc1.weight']
    torch.save(missing, tmp_path / 'missing.pth')
    err = convert(tmp_path / 'missing.pth', tmp_path / 'o1.pth', ok=False).stderr
    assert 'stages.1.1.mlp.fc1.weight' in err

    extra = dict(state, **{'block1.0.attn.extra.weight': torch.zeros(2)})
    torch.save(extra, tmp_path / 'extra.pth')
    err = convert(tmp_path / 'extra.pth', tmp_path / 'o2.pth', ok=False).stderr
    assert 'stages.0.0.attn.extra.weight' in err

    unknown = dict(state, **{'decoder.weight': torch.zeros(2)})
    torch.save(unknown, tmp_path / 'unknown.pth')
    assert "'decoder.weight'" in convert(tmp_path / 'unknown.pth', tmp_path / 'o3.pth',
                                         ok=False).stderr


def test_pickle_payload_is_refused(ref_tiny, tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': dict(ref_tiny.state_dict()),
                'meta': Payload(str(tmp_path / 'pwned'))}, path)
    assert 'refused' in convert(path, tmp_path / 'o.pth', ok=False).stderr
    assert not (tmp_path / 'pwned').exists()
    assert not (tmp_path / 'o.pth').exists()


def test_converter_never_overwrites(ref_file, tmp_path):
    dst = tmp_path / 'out.pth'
    dst.write_bytes(b'user data')
    assert 'exists' in convert(ref_file, dst, ok=False).stderr
    assert dst.read_bytes() == b'user data'
    convert(ref_file, dst, '--overwrite')
    assert 'backbone.cls_token' in torch.load(dst, weights_only=True)


def test_mim_test_mmpretrain_with_converted_checkpoint(ref_tiny, ref_file, demo_data, tmp_path):
    """`mim test` of the converted checkpoint scores every test image as the
    reference model it was converted from does, and so reports its top-1."""
    from mmengine.fileio import load
    from mmengine.runner import Runner
    convert(ref_file, tmp_path / 'c.pth')
    root = f'{demo_data}/imagenet'
    options = [f'test_dataloader.dataset.data_root={root}', 'test_dataloader.batch_size=4',
               'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
    out = run('mim', 'test', 'mmpretrain', 'configs/imagenet/spm-pvt-t_8xb128_in1k.py',
              '--checkpoint', str(tmp_path / 'c.pth'), '--gpus', '0', '--work-dir',
              str(tmp_path / 'w'), '--out', str(tmp_path / 'preds.pkl'),
              '--cfg-options', *options)
    tested = load(str(tmp_path / 'preds.pkl'))  # this test's own output file
    # The same images through the same pipeline and preprocessor, into the
    # reference model.
    cfg = Config.fromfile(osp.join(ROOT, 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'))
    cfg.merge_from_dict(dict(arg.split('=', 1) for arg in options))
    cfg.test_dataloader.batch_size = 4
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    preprocessor = build_model(cfg).data_preprocessor
    scores, labels = [], []
    with torch.no_grad():
        for batch in Runner.build_dataloader(cfg.test_dataloader):
            data = preprocessor(batch, False)
            scores.append(ref_tiny(data['inputs']).softmax(-1))
            labels += [int(s.gt_label) for s in data['data_samples']]
    scores = torch.cat(scores)
    assert len(tested) == len(scores) > 0
    for pred, expected in zip(tested, scores):
        torch.testing.assert_close(pred['pred_score'], expected, **FLOAT32)
    top1 = 100 * sum(int(s.argmax()) == y for s, y in zip(scores, labels)) / len(labels)
    assert metric(out, 'accuracy/top1') == pytest.approx(top1, abs=1e-3)
