"""tools/analysis/collect_results.py on work dirs written by real short
training and test runs (one finished, one killed), erf.py and
attention_map.py on a trained and an untrained model, as a user runs them."""
import csv
import glob
import json
import os.path as osp
import subprocess
import sys

import pytest
from PIL import Image

from tests.utils import (CLS_CONFIG, DET_CONFIG, ROOT, SEG_CONFIG, cls_options, det_options,
                         kill_after_checkpoint, metric, run, seg_options)

pytestmark = pytest.mark.slow
PVT_T = 'configs/mask_rcnn/mask-rcnn_pvt-t_fpn_1x_coco.py'


def collect(*args) -> str:
    return run(sys.executable, 'tools/analysis/collect_results.py', *map(str, args))


@pytest.fixture(scope='module')
def runs(demo_data, tmp_path_factory):
    """A make-demo-like folder: seg trained 8 iterations then tested
    (tools/test.py into seg/test, as make demo does), det trained one epoch
    (validated, not tested), cls trained one epoch then tested, and seg_killed
    killed after its first checkpoint."""
    root = tmp_path_factory.mktemp('runs')
    logs = {}
    run(sys.executable, 'tools/train.py', SEG_CONFIG, '--work-dir', str(root / 'seg'),
        *seg_options(demo_data, 8))
    logs['seg'] = run(sys.executable, 'tools/test.py', SEG_CONFIG, str(root / 'seg' / 'iter_8.pth'),
                      '--work-dir', str(root / 'seg' / 'test'), *seg_options(demo_data, 8))
    logs['det'] = run(sys.executable, 'tools/train.py', DET_CONFIG, '--work-dir',
                      str(root / 'det'), *det_options(demo_data))
    cls = cls_options(demo_data)
    run(sys.executable, 'tools/train.py', CLS_CONFIG, '--work-dir', str(root / 'cls'), *cls)
    logs['cls'] = run(sys.executable, 'tools/test.py', CLS_CONFIG,
                      str(root / 'cls' / 'epoch_1.pth'),
                      '--work-dir', str(root / 'cls' / 'test'), *cls)
    killed = root / 'seg_killed'
    kill_after_checkpoint([sys.executable, 'tools/train.py', SEG_CONFIG, '--work-dir', str(killed),
                           *seg_options(demo_data, 200), 'default_hooks.logger.interval=5'],
                          killed, 'iter_20.pth')
    return root, logs


def csv_rows(path) -> dict:
    with open(path) as f:
        return {osp.basename(r['work_dir']): r for r in csv.DictReader(f)}


def test_collector_reproduces_logged_metrics_and_marks_unfinished_runs(runs, tmp_path):
    root, logs = runs
    table = collect(*sorted(glob.glob(f'{root}/*')), '--out', tmp_path / 't.md',
                    '--csv', tmp_path / 't.csv')
    assert (tmp_path / 't.md').read_text() in table
    rows = csv_rows(tmp_path / 't.csv')
    assert set(rows) == {'seg', 'det', 'cls', 'seg_killed'}

    seg = rows['seg']
    assert float(seg['mIoU']) == metric(logs['seg'], 'mIoU')  # the test run's, as logged
    assert seg['source'].startswith('test of iter_8.pth') and seg['status'] == 'finished'
    assert float(seg['mIoU ref']) == 41.5  # SPM-PVT-T in configs/semantic_fpn/metafile.yml
    assert seg['mIoU diff'] == ''  # the demo data has 4 classes, not ADE20K's 150
    assert 'not comparable: 4 classes' in seg['reference']

    det = rows['det']  # validated during training only
    val = [json.loads(line) for line in open(glob.glob(f'{root}/det/*/vis_data/2*.json')[0])
           if 'coco/bbox_mAP' in line][-1]
    assert det['source'].startswith('val at epoch 1') and det['status'] == 'finished'
    for label, key in [('box AP', 'bbox_mAP'), ('box AP50', 'bbox_mAP_50'),
                       ('box APl', 'bbox_mAP_l'), ('mask AP', 'segm_mAP'),
                       ('mask APs', 'segm_mAP_s')]:
        logged = val[f'coco/{key}']
        assert det[label] == ('' if logged < 0 else str(round(logged * 100, 4))), label
    assert float(rows['cls']['top-1']) == metric(logs['cls'], 'accuracy/top1')

    killed = rows['seg_killed']
    assert killed['status'].startswith('UNFINISHED training: iter ')
    assert 'of 200 logged, last checkpoint iter_20.pth' in killed['status']
    assert killed['mIoU'] == '' and killed['source'] == '-'
    assert '| UNFINISHED training' in table and str(root / 'seg_killed') in table


def test_collector_takes_a_demo_folder_and_never_overwrites(runs, tmp_path):
    """A folder of work dirs (make demo's run folder) is expanded; its files
    are passed over; an existing output file is refused untouched."""
    root, _ = runs
    by_folder = collect(root)
    assert by_folder.count('| SPM-PVT-T |') == 4
    (tmp_path / 'exists.md').write_text('mine')
    proc = subprocess.run([sys.executable, 'tools/analysis/collect_results.py', str(root),
                           '--out', str(tmp_path / 'exists.md')], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and 'exists' in proc.stderr
    assert (tmp_path / 'exists.md').read_text() == 'mine'


def assert_png(path) -> None:
    with Image.open(path) as image:
        assert image.format == 'PNG' and min(image.size) > 100


def test_erf_tool(runs, demo_data, tmp_path):
    root, _ = runs
    out = run(sys.executable, 'tools/analysis/erf.py', '--images', f'{demo_data}/imagenet/val',
              '--out', str(tmp_path / 'erf.png'), '--size', '64', '--num-images', '2',
              '--model', PVT_T, '--model', CLS_CONFIG, str(root / 'cls' / 'epoch_1.pth'))
    assert_png(tmp_path / 'erf.png')
    rows = [line for line in out.splitlines() if line.startswith('| ') and ' px ' in line]
    assert [r.split(' | ')[0] for r in rows] == ['| PVT-T (untrained)', '| SPM-PVT-T (epoch_1.pth)']
    for line in rows:
        sides = [int(cell.split(' px')[0]) for cell in line.split(' | ')[3:6]]
        assert sides == sorted(sides) and all(1 <= s <= 127 and s % 2 for s in sides)


def test_attention_map_tool(runs, demo_data, tmp_path):
    root, _ = runs
    image = sorted(glob.glob(f'{demo_data}/imagenet/val/*'))[0]
    out = run(sys.executable, 'tools/analysis/attention_map.py', image, '--out',
              str(tmp_path / 'attention.png'), '--size', '96', '--heads', '1', '2',
              '--model', PVT_T, '--model', CLS_CONFIG, str(root / 'cls' / 'epoch_1.pth'))
    assert_png(tmp_path / 'attention.png')
    rows = [line for line in out.splitlines() if line.startswith('| ') and 'head' not in line]
    assert len(rows) == 4
    for line in rows:  # keys lie within the 96x96 image: less than its diagonal away
        assert 0 < float(line.split(' | ')[-1].rstrip(' |')) < 96 * 2**0.5
    refused = subprocess.run([sys.executable, 'tools/analysis/attention_map.py', image,
                              '--out', str(tmp_path / 'attention.png'), '--model', PVT_T],
                             cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode != 0 and 'never written over' in refused.stderr
