"""The main job on embedded data (`make demo`): the paper's pipeline in miniature.

1. Generates the demo data when missing (tools/make_demo_data.py).
2. Pretrains an SPM-PVT-T classifier with mmpretrain (the ImageNet recipe on
   the demo's ImageNet-layout set) and tests it (Accuracy).
3. Trains SPM-PVT-T Mask R-CNN and SPM-PVT-T Semantic FPN with their backbones
   initialised from that classifier through ``model.backbone.init_cfg``, and
   tests them (CocoMetric bbox+segm, IoUMetric).
4. Draws predictions of a few validation images beside their ground truth
   (tools/analysis/show_predictions.py), and the paper's two figures for
   untrained PVT-T and SPM-PVT-T and the trained classifier: effective
   receptive fields (tools/analysis/erf.py) and stage-2 attention maps
   (tools/analysis/attention_map.py).
5. Collects the test results in the paper's table layout
   (tools/analysis/collect_results.py).

Every step is the real tool in a subprocess (tools/train.py, tools/test.py),
its output in a log. Prints a results table and writes it, with the time of
each stage and the pictures, to ``summary.md`` in the run's work dir. Every
run gets a new work dir, so earlier runs are never overwritten.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import NamedTuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA = 'data/demo'  # the data_root of configs/demo/
PICTURES_PER_MODEL = 3


class Job(NamedTuple):
    name: str
    config: str
    short: str  # its folder in the run's work dir
    metrics: tuple[tuple[str, str, str], ...]  # (label, logged key, format)


PRETRAIN = Job('SPM-PVT-T classifier', 'configs/demo/spm-pvt-t_cls_demo.py', 'cls',
               (('top-1 (%)', 'accuracy/top1', '.1f'), ))
DENSE = (
    Job('Mask R-CNN, SPM-PVT-T', 'configs/demo/mask-rcnn_spm-pvt-t_fpn_demo.py', 'det',
        (('box mAP', 'coco/bbox_mAP', '.3f'), ('mask mAP', 'coco/segm_mAP', '.3f'))),
    Job('Semantic FPN, SPM-PVT-T', 'configs/demo/fpn_spm-pvt-t_demo.py', 'seg',
        (('mIoU (%)', 'mIoU', '.1f'), )),
)
# Untrained backbones the figures compare with the classifier.
UNTRAINED = ('configs/mask_rcnn/mask-rcnn_pvt-t_fpn_1x_coco.py',
             'configs/mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py')
# What mmspm logs when init_cfg has loaded a backbone checkpoint.
LOADED = re.compile(r'SPMPVT: loaded .*; missing keys: (.*?); unexpected keys: .*')


class Demo:

    def __init__(self, work_root: str) -> None:
        self.work_root = work_root
        self.stage_times: list[tuple[str, float]] = []

    def run(self, stage: str, args: list[str], log: str) -> str:
        """Run a tool, its output into ``log``; on failure show the log's tail."""
        log = osp.join(self.work_root, log)
        start = time.time()
        print(f'[{stage}] $ {" ".join(args)}', flush=True)
        with open(log, 'w') as f:
            code = subprocess.call([sys.executable] + args, cwd=ROOT, stdout=f,
                                   stderr=subprocess.STDOUT)
        with open(log) as f:
            output = f.read()
        if code:
            sys.stderr.write(''.join(output.splitlines(True)[-40:]))
            raise SystemExit(f'demo step failed (exit {code}): {" ".join(args)}; '
                             f'full log: {log}')
        seconds = time.time() - start
        self.stage_times.append((stage, seconds))
        print(f'[{stage}] done in {seconds:.0f} s (log: {log})', flush=True)
        return output

    def train_and_test(self, job: Job, options: list[str]) -> tuple[str, dict]:
        """Train, then test the last checkpoint; (checkpoint, test metrics)."""
        work_dir = osp.join(self.work_root, job.short)
        output = self.run(f'{job.short}: train', ['tools/train.py', job.config,
                          '--work-dir', work_dir, *options], f'{job.short}_train.log')
        if options:  # initialised from the classifier: show that it loaded
            loaded = LOADED.search(output)
            if loaded is None or loaded[1] != 'none':
                raise SystemExit(f'{job.name}: the backbone was not fully '
                                 f'initialised from the classifier; see '
                                 f'{work_dir}/*/*.log')
            print(f'[{job.short}: train] backbone init: {loaded[0]}')
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            checkpoint = f.read().strip()
        self.run(f'{job.short}: test', ['tools/test.py', job.config, checkpoint,
                 '--work-dir', osp.join(work_dir, 'test')], f'{job.short}_test.log')
        logs = sorted(glob.glob(osp.join(work_dir, 'test', '*', '*.json')))
        if not logs:
            raise SystemExit(f'no test metrics under {work_dir}/test')
        with open(logs[-1]) as f:
            return checkpoint, json.load(f)

    def pictures(self, job: Job, checkpoint: str) -> list[str]:
        out_dir = osp.join(self.work_root, 'pictures', job.short)
        output = self.run(f'{job.short}: pictures', [
            'tools/analysis/show_predictions.py', job.config, checkpoint,
            '--out-dir', out_dir, '--num', str(PICTURES_PER_MODEL)
        ], f'{job.short}_pictures.log')
        return [line for line in output.splitlines() if line.endswith('.png')]

    def figures(self, classifier: str) -> list[tuple[str, str]]:
        """The paper's ERF and attention figures; (title, path) of each."""
        out_dir = osp.join(self.work_root, 'pictures')
        models = [a for config in UNTRAINED for a in ('--model', config)]
        models += ['--model', PRETRAIN.config, classifier]
        images = osp.join(DATA, 'imagenet', 'val')
        erf, attention = osp.join(out_dir, 'erf.png'), osp.join(out_dir, 'attention.png')
        self.run('figures: ERF', ['tools/analysis/erf.py', '--images', images, '--size',
                                  '224', '--out', erf, *models], 'erf.log')
        self.run('figures: attention', [
            'tools/analysis/attention_map.py', sorted(glob.glob(osp.join(ROOT, images, '*')))[0],
            '--out', attention, *models], 'attention.log')
        return [('Effective receptive fields, stage 4', erf),
                ('Attention of stage 2, block 1, heads 1-2', attention)]


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
    demo = Demo(work_root)
    start = time.time()
    if not osp.isfile(osp.join(ROOT, DATA, 'imagenet', 'meta', 'val.txt')):
        demo.run('data', ['tools/make_demo_data.py', '--out', DATA],
                 'make_demo_data.log')

    rows, pictures = [], []

    def add_rows(job: Job, values: dict) -> None:
        rows.extend((job.name, label, format(values[key], fmt))
                    for label, key, fmt in job.metrics)

    classifier, values = demo.train_and_test(PRETRAIN, [])
    add_rows(PRETRAIN, values)
    init = ['--cfg-options', f'model.backbone.init_cfg.checkpoint={classifier}']
    for job in DENSE:
        checkpoint, values = demo.train_and_test(job, init)
        add_rows(job, values)
        pictures += [(job.name, p) for p in demo.pictures(job, checkpoint)]
    pictures += demo.figures(classifier)
    results = osp.join(work_root, 'results.md')
    demo.run('results', ['tools/analysis/collect_results.py', '--out', results,
                         *(osp.join(work_root, job.short) for job in (PRETRAIN, *DENSE))],
             'results.log')
    with open(results) as f:
        paper_tables = f.read()
    total = time.time() - start

    table = ['| model | metric | value |', '|---|---|---|']
    table += [f'| {name} | {label} | {value} |' for name, label, value in rows]
    times = [f'| {stage} | {seconds:.0f} |' for stage, seconds in demo.stage_times]
    times = ['| stage | seconds |', '|---|---|', *times, f'| total | {total:.0f} |']
    summary = [
        '# mmspm demo', '',
        'Embedded synthetic data, a few minutes of CPU training per model '
        '(configs/demo/): a check that the pipeline learns, not the paper\'s '
        'numbers.', '', *table, '', f'Backbones initialised from {classifier}.',
        '', '## In the paper\'s table layout', '', paper_tables, '## Stage times', '',
        *times, '', '## Pictures (predictions: ground truth | prediction)', '',
        *[f'![{name}]({osp.relpath(p, work_root)})' for name, p in pictures], '']
    with open(osp.join(work_root, 'summary.md'), 'w') as f:
        f.write('\n'.join(summary))

    print('\nmmspm demo results (embedded synthetic data, a few minutes of CPU '
          'training per model: a pipeline check, not the paper\'s numbers)')
    print('\n'.join(table))
    print(f'\ntotal {total / 60:.1f} min; stage times, pictures and table: '
          f'{work_root}/summary.md; logs: {work_root}/*.log')
    print(f'paper-format tables: {results}')
    print('pictures (predictions: ground truth | prediction; the figures):')
    for _, path in pictures:
        print(f'  {path}')


if __name__ == '__main__':
    main()
