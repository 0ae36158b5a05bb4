"""The main job on embedded data: `make demo`.

Generates the demo data when missing, trains SPM-PVT-T Mask R-CNN and
SPM-PVT-T Semantic FPN briefly on the CPU with tools/train.py, evaluates the
last checkpoint of each with tools/test.py (mmdet's CocoMetric, mmseg's
IoUMetric) and prints a results table. Every run gets a new work dir, so
earlier runs are never overwritten.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA = 'data/demo'  # the data_root of configs/demo/
JOBS = (
    ('Mask R-CNN, SPM-PVT-T', 'configs/demo/mask-rcnn_spm-pvt-t_fpn_demo.py', 'det',
     (('box mAP', 'coco/bbox_mAP'), ('mask mAP', 'coco/segm_mAP'))),
    ('Semantic FPN, SPM-PVT-T', 'configs/demo/fpn_spm-pvt-t_demo.py', 'seg',
     (('mIoU (%)', 'mIoU'), )),
)


def run(args: list[str], log: str) -> None:
    """Run a step, its output into ``log``; on failure show the log's tail."""
    start = time.time()
    print(f'$ {" ".join(args)}  (log: {log})', flush=True)
    with open(log, 'w') as f:
        code = subprocess.call([sys.executable] + args, cwd=ROOT, stdout=f,
                               stderr=subprocess.STDOUT)
    if code:
        with open(log) as f:
            sys.stderr.write(''.join(f.readlines()[-40:]))
        raise SystemExit(f'demo step failed (exit {code}): {" ".join(args)}; '
                         f'full log: {log}')
    print(f'  done in {time.time() - start:.0f} s', flush=True)


def test_metrics(work_dir: str) -> dict:
    """Metrics that mmengine's LoggerHook wrote for the test run."""
    logs = sorted(glob.glob(osp.join(work_dir, 'test', '*', '*.json')))
    if not logs:
        raise SystemExit(f'no test metrics under {work_dir}/test')
    with open(logs[-1]) as f:
        return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default=osp.join(
        'work_dirs', 'demo', time.strftime('%Y%m%d_%H%M%S')))
    args = parser.parse_args()
    work_root = osp.join(ROOT, args.work_dir)
    if osp.exists(work_root):
        raise SystemExit(f'{work_root} exists; choose another --work-dir '
                         f'(the demo never writes over an earlier run).')
    os.makedirs(work_root)
    if not osp.isfile(osp.join(ROOT, DATA, 'coco', 'annotations',
                               'instances_val2017.json')):
        run(['tools/make_demo_data.py', '--out', DATA],
            osp.join(work_root, 'make_demo_data.log'))
    rows = []
    for name, config, short, metrics in JOBS:
        work_dir = osp.join(work_root, short)
        run(['tools/train.py', config, '--work-dir', work_dir],
            osp.join(work_root, f'{short}_train.log'))
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            checkpoint = f.read().strip()
        run(['tools/test.py', config, checkpoint, '--work-dir',
             osp.join(work_dir, 'test')], osp.join(work_root, f'{short}_test.log'))
        values = test_metrics(work_dir)
        for label, key in metrics:
            rows.append((name, label, values[key], checkpoint))
    print('\nmmspm demo results (embedded synthetic data, a few minutes of CPU '
          'training: a pipeline check, not the paper\'s numbers)')
    print(f'| {"model":<24} | {"metric":<8} | {"value":>7} |')
    print(f'|{"-" * 26}|{"-" * 10}|{"-" * 9}|')
    for name, label, value, _ in rows:
        print(f'| {name:<24} | {label:<8} | {value:7.3f} |')
    print(f'\nlogs: {work_root}/*.log')
    for name, checkpoint in dict((r[0], r[3]) for r in rows).items():
        print(f'checkpoint ({name}): {checkpoint}')


if __name__ == '__main__':
    main()
