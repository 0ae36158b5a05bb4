"""`mim train` / `mim test` / `tools/*.py` as a user runs them, in subprocesses."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

import mmspm
from tests.utils import (CLS_CONFIG, DET_CONFIG, PAYLOAD_REFUSED, ROOT, SEG_CONFIG, Payload,
                         cls_options, det_options, metric, needs_torch, run, seg_options)

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def seg_run(demo_data, tmp_path_factory):
    """40 iterations of the segmentation demo with `mim train`."""
    work_dir = tmp_path_factory.mktemp('seg')
    run('mim', 'train', 'mmseg', SEG_CONFIG, '--gpus', '0', '--work-dir',
        str(work_dir), *seg_options(demo_data, 40))
    return work_dir


def test_mim_test_reloads_trained_checkpoint_and_beats_untrained(seg_run, demo_data, tmp_path):
    checkpoint = seg_run / 'iter_40.pth'
    trained = metric(run('mim', 'test', 'mmseg', SEG_CONFIG, '--checkpoint',
                         str(checkpoint), '--gpus', '0', '--work-dir', str(tmp_path / 'a'),
                         *seg_options(demo_data, 40)), 'mIoU')

    # The same model before training, as a checkpoint on disk.
    from mmengine.config import Config

    from mmspm.builder import build_model
    cfg = Config.fromfile(osp.join(ROOT, SEG_CONFIG))
    torch.manual_seed(0)
    model = build_model(cfg, init_weights=True)
    untrained_ckpt = tmp_path / 'untrained.pth'
    torch.save({'state_dict': model.state_dict()}, untrained_ckpt)
    untrained = metric(run(sys.executable, 'tools/test.py', SEG_CONFIG,
                           str(untrained_ckpt), '--work-dir', str(tmp_path / 'b'),
                           *seg_options(demo_data, 40)), 'mIoU')
    assert 0 <= untrained < trained <= 100
    assert trained > untrained + 10, (trained, untrained)


@needs_torch('2.6', "torch.load's weights-only default")
def test_runner_checkpoint_needs_the_allow_list(seg_run):
    """The checkpoint holds mmengine's HistoryBuffer/numpy objects: plain
    torch.load (weights_only by default) refuses it; with mmspm imported the
    exact allow-list makes it load, still weights_only."""
    checkpoint = str(seg_run / 'iter_40.pth')
    probe = ('import sys, torch\n'
             'try:\n    torch.load(sys.argv[1])\nexcept Exception as e:\n'
             '    print("REFUSED", type(e).__name__)\nelse:\n    print("LOADED")\n')
    assert 'REFUSED' in run(sys.executable, '-c', probe, checkpoint)
    assert 'LOADED' in run(sys.executable, '-c', 'import mmspm\n' + probe, checkpoint)


def test_resume_continues_from_the_checkpoint(seg_run, demo_data):
    before = set(os.listdir(seg_run))
    out = run(sys.executable, 'tools/train.py', SEG_CONFIG, '--work-dir', str(seg_run),
              '--resume', *seg_options(demo_data, 60))
    assert re.search(r'resumed? .*iter_40\.pth|Load checkpoint from .*iter_40\.pth', out,
                     re.IGNORECASE), out[-3000:]
    assert 'Iter(train) [ 50/60]' in out or 'Iter(train) [50/60]' in out
    assert 'Iter(train) [ 10/60]' not in out and 'Iter(train) [10/60]' not in out
    after = set(os.listdir(seg_run))
    assert 'iter_60.pth' in after
    assert before - after <= {'iter_20.pth'}  # only rotation by max_keep_ckpts


@pytest.mark.parametrize('how', ['load_from', 'resume'])
def test_tools_refuse_a_payload_checkpoint(demo_data, tmp_path, how):
    """A checkpoint with a pickled payload, given to tools/train.py as
    load_from or found by --resume in the work dir: the run stops, the
    payload does not run. On the OneDL fork too, whose mmengine retries a
    refused weights_only load with weights_only=False."""
    work_dir, target = tmp_path / 'work', tmp_path / 'pwned'
    work_dir.mkdir()
    checkpoint = work_dir / 'epoch_1.pth'
    torch.save({'state_dict': {}, 'meta': Payload(str(target))}, checkpoint)
    options = cls_options(demo_data)
    if how == 'resume':
        (work_dir / 'last_checkpoint').write_text(str(checkpoint))
        options = ['--resume'] + options
    else:
        options.append(f'load_from={checkpoint}')
    proc = subprocess.run([sys.executable, 'tools/train.py', CLS_CONFIG, '--work-dir',
                           str(work_dir), *options], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert re.search(PAYLOAD_REFUSED, proc.stdout + proc.stderr), proc.stderr[-3000:]
    assert not target.exists()


# What `mim train/test` calls mmdet on each stack: onedl-mim 0.5.1 cannot
# resolve "mmdet", which names both onedl-mmdetection and mmdet3d in its table.
MIM_MMDET = dict(openmmlab='mmdet', onedl='onedl-mmdetection')


def test_mim_names_mmdet_as_the_stack_needs():
    from mim.utils import module_full_name
    assert module_full_name(MIM_MMDET[mmspm.STACK]) != ''
    assert (module_full_name('mmdet') == '') == (mmspm.STACK == 'onedl')


def test_mim_detection_train_and_test(demo_data, tmp_path):
    options = det_options(demo_data)
    mmdet = MIM_MMDET[mmspm.STACK]
    run('mim', 'train', mmdet, DET_CONFIG, '--gpus', '0', '--work-dir',
        str(tmp_path), *options)
    out = run('mim', 'test', mmdet, DET_CONFIG, '--checkpoint',
              str(tmp_path / 'epoch_1.pth'), '--gpus', '0', '--work-dir',
              str(tmp_path / 'test'), *options)
    for name in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50'):
        assert 0.0 <= metric(out, name) <= 1.0
