"""The demo's pipeline (tools/demo.py): a classifier trained by tools/train.py
initialises the dense backbones through init_cfg, the detector learns, the
pictures are drawn, and missing data is named with its fix."""
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mmspm.builder import build_model
from mmspm.launch import check_data
from tests.utils import CLS_CONFIG, DET_CONFIG, ROOT, SEG_CONFIG, metric, run, seg_options


def build(config: str, init_checkpoint=None):
    """The config's model initialised: its backbone from ``init_checkpoint``
    (through init_cfg) or by its own initialisation."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    if init_checkpoint is not None:
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(init_checkpoint))
    return build_model(cfg, init_weights=True, pretrained=init_checkpoint is not None)


@pytest.mark.slow
@pytest.mark.parametrize('config', [DET_CONFIG, SEG_CONFIG])
def test_classifier_initialises_the_dense_backbone(classifier, config):
    """Every backbone tensor equals the classifier's (the cls-token entry of
    the last position embedding, the cls token and the final norm dropped)."""
    torch.manual_seed(1)
    model = build(config, classifier)
    torch.manual_seed(1)
    fresh = build(config).backbone.state_dict()
    trained = torch.load(classifier)['state_dict']
    backbone = model.backbone.state_dict()
    assert {f'backbone.{k}' for k in backbone} | {
        'backbone.cls_token', 'backbone.norm.weight', 'backbone.norm.bias'
    } == {k for k in trained if k.startswith('backbone.')}
    for k, v in backbone.items():
        expected = trained[f'backbone.{k}']
        if k == 'pos_embeds.3':
            expected = expected[:, 1:]
        assert torch.equal(v, expected), k
    assert any(not torch.equal(v, fresh[k]) for k, v in backbone.items()
               if v.dtype.is_floating_point), 'the init changed nothing'


@pytest.mark.slow
def test_briefly_trained_detector_beats_untrained(detector_run, classifier, tmp_path):
    checkpoint, train_log, options = detector_run
    assert f'SPMPVT: loaded {classifier}' in train_log
    assert 'missing keys: none; unexpected keys: none' in train_log
    trained = metric(run(sys.executable, 'tools/test.py', DET_CONFIG,
                         str(checkpoint), '--work-dir', str(tmp_path / 'a'),
                         *options), 'coco/bbox_mAP')
    # The same model as initialised (backbone from the classifier), on disk.
    torch.manual_seed(0)
    untrained_ckpt = tmp_path / 'untrained.pth'
    torch.save({'state_dict': build(DET_CONFIG, classifier).state_dict()}, untrained_ckpt)
    untrained = metric(run(sys.executable, 'tools/test.py', DET_CONFIG,
                           str(untrained_ckpt), '--work-dir', str(tmp_path / 'b'),
                           *options), 'coco/bbox_mAP')
    assert 0 <= untrained < trained <= 1
    assert trained > untrained + 0.05, (trained, untrained)


def check_pictures(output: str, num: int, image_dir: str) -> None:
    """Each picture is a non-blank PNG of ground truth beside prediction:
    twice the width of the image it shows."""
    paths = [line for line in output.splitlines() if line.endswith('.png')]
    assert len(paths) == num, output
    for path in paths:
        picture = Image.open(path)
        assert picture.format == 'PNG'
        assert np.asarray(picture.convert('RGB')).std() > 1, f'{path}: blank'
        name = osp.splitext(osp.basename(path))[0]
        image = Image.open(f'{image_dir}/{name}.jpg')
        assert picture.size == (2 * image.width, image.height)


@pytest.mark.slow
def test_pictures_of_both_dense_models(detector_run, demo_data, tmp_path):
    checkpoint, _, det_opts = detector_run
    out = run(sys.executable, 'tools/analysis/show_predictions.py', DET_CONFIG,
              str(checkpoint), '--out-dir', str(tmp_path / 'det'),
              '--num', '2', *det_opts)
    check_pictures(out, 2, f'{demo_data}/coco/val2017')
    torch.manual_seed(0)
    seg_ckpt = tmp_path / 'seg.pth'
    torch.save({'state_dict': build(SEG_CONFIG).state_dict()}, seg_ckpt)
    out = run(sys.executable, 'tools/analysis/show_predictions.py', SEG_CONFIG,
              str(seg_ckpt), '--out-dir', str(tmp_path / 'seg'), '--num', '3',
              *seg_options(demo_data, 1))
    check_pictures(out, 3, f'{demo_data}/ade/images/validation')


@pytest.mark.parametrize('config,expected', [
    (DET_CONFIG, ['make demo', 'tools/make_demo_data.py']),
    (SEG_CONFIG, ['make demo', 'tools/make_demo_data.py']),
    (CLS_CONFIG, ['make demo', 'tools/make_demo_data.py']),
    ('configs/mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py',
     ['data/coco/annotations/instances_{train,val}2017.json', 'docs/reproduce.md',
      '"1. Data"']),
    ('configs/semantic_fpn/fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py',
     ['data/ade/ADEChallengeData2016/images/{training,validation}', 'docs/reproduce.md']),
    ('configs/imagenet/spm-pvt-t_8xb128_in1k.py',
     ['data/imagenet/meta/{train,val}.txt', 'docs/reproduce.md']),
])
def test_missing_data_names_the_path_and_the_fix(config, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where no data/ exists
    cfg = Config.fromfile(osp.join(ROOT, config))
    for mode in ('train', 'test'):
        with pytest.raises(SystemExit) as e:
            check_data(cfg, mode)
        message = str(e.value)
        root = osp.normpath(cfg[f'{mode}_dataloader'].dataset.data_root)
        assert f"{root!r} does not exist" in message, message
        for text in expected:
            assert text in message, message


def test_present_data_passes(demo_data):
    cfg = Config.fromfile(osp.join(ROOT, DET_CONFIG))
    root = f'{demo_data}/coco/'
    for part in ('train', 'val', 'test'):
        cfg[f'{part}_dataloader'].dataset.data_root = root
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = \
        f'{root}annotations/instances_val2017.json'
    check_data(cfg, 'train')
    check_data(cfg, 'test')
    cfg.train_dataloader.dataset.ann_file = 'annotations/nope.json'
    with pytest.raises(SystemExit, match=r'nope\.json'):
        check_data(cfg, 'train')


@pytest.mark.slow
def test_train_without_data_exits_with_the_message(tmp_path):
    missing = tmp_path / 'nowhere'
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', SEG_CONFIG, '--work-dir', str(tmp_path / 'w'),
         '--cfg-options', f'train_dataloader.dataset.data_root={missing}/'],
        cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert f'Data set not found: {str(missing)!r} does not exist' in proc.stderr
    assert 'make demo' in proc.stderr
    assert 'Traceback' not in proc.stderr
