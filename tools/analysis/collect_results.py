"""Collect the results of training/test runs into the paper's tables.

Reads what mmengine wrote in each work dir: the config it dumped, the JSON
logs of validation (``<timestamp>/vis_data/<timestamp>.json``) and of test
runs (``<timestamp>/<timestamp>.json``, also under ``WORK_DIR/*/``, such as
``test/`` in ``make demo``'s work dirs). Recognises the task from the metrics
(COCO instance segmentation, ADE20K semantic segmentation, ImageNet
classification) and prints one table per task in the paper's layout, a row
per work dir, each cell ``measured (reference, difference)``::

    python tools/analysis/collect_results.py work_dirs/mask-rcnn_*/ [--out table.md] \
        [--csv table.csv]

The reference numbers are those of ``configs/*/metafile.yml`` (the paper's,
or the named source's), matched by task and backbone; runs on other data than
the paper's (another number of classes, e.g. the demo) show them without a
difference. Each row says where its numbers come from: the test of a
checkpoint (preferred), else the last validation of the training. Unfinished
or failed runs are listed with how far they got. Output files are never
written over.
"""
import argparse
import csv
import glob
import json
import os.path as osp
import re
import sys
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import yaml
from mmengine.config import Config

from mmspm.analysis import backbone_token, display_name, name_token

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')


class Column(NamedTuple):
    label: str
    key: str  # what mmengine logs
    scale: float  # to the paper's unit (percent)


class Task(NamedTuple):
    title: str
    metafile_tasks: tuple[str, ...]  # `Task` in configs/*/metafile.yml
    columns: tuple[Column, ...]
    num_classes: int  # of the paper's data
    classes_at: tuple[str, ...]  # where the model config says its number of classes


def _coco_columns(prefix: str, label: str) -> tuple[Column, ...]:
    return tuple(Column(f'{label} {name}' if name else f'{label} AP',
                        f'coco/{prefix}_mAP{key}', 100)
                 for name, key in (('', ''), ('AP50', '_50'), ('AP75', '_75'),
                                   ('APs', '_s'), ('APm', '_m'), ('APl', '_l')))


TASKS = {
    'coco/bbox_mAP': Task('COCO val2017: Mask R-CNN instance segmentation',
                          ('Object Detection', 'Instance Segmentation'),
                          _coco_columns('bbox', 'box') + _coco_columns('segm', 'mask'),
                          80, ('roi_head', 'bbox_head', 'num_classes')),
    'mIoU': Task('ADE20K val: Semantic FPN semantic segmentation', ('Semantic Segmentation', ),
                 (Column('mIoU', 'mIoU', 1), ), 150, ('decode_head', 'num_classes')),
    'accuracy/top1': Task('ImageNet-1K val: classification', ('Image Classification', ),
                          (Column('top-1', 'accuracy/top1', 1), ), 1000, ('head', 'num_classes')),
}
SCOPE_TASKS = {'mmdet': 'coco/bbox_mAP', 'mmseg': 'mIoU', 'mmpretrain': 'accuracy/top1'}
METAFILE_METRICS = {'box AP': 'box AP', 'mask AP': 'mask AP', 'mIoU': 'mIoU',
                    'Top 1 Accuracy': 'top-1'}


@dataclass
class Run:
    """One mmengine process: a ``<timestamp>`` folder with its log."""
    path: str
    config: Optional[Config] = None
    test: Optional[dict] = None  # the metrics of a finished test
    vals: list[tuple[int, dict]] = field(default_factory=list)  # (epoch or iter, metrics)
    progress: Optional[tuple[int, int]] = None  # last logged training (epoch, iter)

    @property
    def name(self) -> str:
        return osp.basename(self.path)


def read_run(path: str) -> Run:
    run = Run(path)
    name = osp.basename(path)
    config = osp.join(path, 'vis_data', 'config.py')
    if osp.isfile(config):
        run.config = Config.fromfile(config, import_custom_modules=False)
    test = osp.join(path, f'{name}.json')
    if osp.isfile(test):
        with open(test) as f:
            run.test = json.load(f)
    scalars = osp.join(path, 'vis_data', f'{name}.json')
    if osp.isfile(scalars):
        with open(scalars) as f:
            for line in f:
                entry = json.loads(line)
                if 'lr' in entry:
                    run.progress = (entry.get('epoch', 0), entry['iter'])
                elif 'step' in entry:
                    run.vals.append((entry['step'], entry))
    return run


def is_run(path: str) -> bool:
    name = osp.basename(path)
    return bool(TIMESTAMP.match(name)) and osp.isfile(osp.join(path, f'{name}.log'))


def work_dirs_in(path: str) -> list[str]:
    """``path`` if it is a work dir (mmengine dumps the config into every work
    dir, so: a ``*.py`` file or a run in it), else the work dirs just below it
    (e.g. the cls/det/seg folders of a ``make demo`` run)."""
    if glob.glob(osp.join(path, '*.py')) or any(map(is_run, glob.glob(osp.join(path, '*')))):
        return [path]
    return sorted(p for p in glob.glob(osp.join(path, '*'))
                  if osp.isdir(p) and glob.glob(osp.join(p, '*.py')))


def find_runs(work_dir: str) -> list[Run]:
    """The runs in ``work_dir`` and one folder below it, oldest first."""
    paths = [p for p in glob.glob(osp.join(work_dir, '*')) + glob.glob(osp.join(work_dir, '*', '*'))
             if is_run(p)]
    return [read_run(p) for p in sorted(paths, key=osp.basename)]


@dataclass
class Row:
    work_dir: str
    task: Optional[str] = None  # a key of TASKS
    backbone: str = '?'
    token: str = ''
    num_classes: Optional[int] = None
    values: dict = field(default_factory=dict)  # logged key -> value
    source: str = '-'
    status: str = ''


def _dig(cfg: dict, path: tuple[str, ...]):
    for key in path:
        cfg = cfg.get(key) if isinstance(cfg, dict) else None
    return cfg


def _checkpoint_name(path: Optional[str], work_dir: str) -> str:
    if not path:
        return '?'
    relative = osp.relpath(osp.abspath(path), osp.abspath(work_dir))
    return path if relative.startswith('..') else relative


def summarise(work_dir: str, runs: list[Run]) -> Row:
    """What the runs of one work dir add up to: the numbers and their source,
    how far training got, and what failed."""
    row = Row(work_dir)
    config = next((r.config for r in reversed(runs) if r.config is not None), Config())
    tests = [r for r in runs if r.test is not None]
    trains = [r for r in runs if r.progress is not None or r.vals]
    failed = [r for r in runs if r.test is None and r.progress is None and not r.vals]
    vals = [(r, step, m) for r in trains for step, m in r.vals]
    loop = config.get('train_cfg') or {}
    unit = 'iter' if 'max_iters' in loop else 'epoch'

    metrics = tests[-1].test if tests else vals[-1][2] if vals else {}
    row.values = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    row.task = next((k for k in TASKS if k in metrics),
                    SCOPE_TASKS.get(config.get('default_scope')))
    if 'model' in config:
        row.token = backbone_token(config.model.backbone)
        row.backbone = display_name(row.token)
        if row.task:
            row.num_classes = _dig(config.model, TASKS[row.task].classes_at)
    if tests:
        checkpoint = tests[-1].config.get('load_from') if tests[-1].config else None
        row.source = f'test of {_checkpoint_name(checkpoint, work_dir)} ({tests[-1].name})'
    elif vals:
        row.source = f'val at {unit} {vals[-1][1]} ({vals[-1][0].name})'

    notes = []
    if trains:
        total = loop.get(f'max_{unit}s')
        done = max((r.progress or (0, 0))[unit == 'iter'] for r in trains)
        last = osp.join(work_dir, 'last_checkpoint')
        saved = open(last).read().strip() if osp.isfile(last) else None
        if (saved and osp.basename(saved) == f'{unit}_{total}.pth') or total in [
                step for _, step, _ in vals]:
            notes.append('finished')
        else:
            notes.append(f'UNFINISHED training: {unit} {done} of {total} logged, last '
                         f'checkpoint {osp.basename(saved) if saved else "none"} '
                         f'({trains[-1].name}: stopped, failed or still running)')
    elif tests:
        notes.append('test only')
    if failed and (not tests or failed[-1].name > tests[-1].name):
        notes.append(f'FAILED or unfinished run {failed[-1].name} (no metrics logged; '
                     f'see its .log)')
    if not metrics:
        notes.append('no metrics')
    row.status = '; '.join(notes)
    return row


def reference_numbers(root: str = ROOT) -> dict:
    """(task key, backbone token) -> (metric label -> value, source), from the
    metafiles (the token from the model's name)."""
    by_task = {name: k for k, t in TASKS.items() for name in t.metafile_tasks}
    table = {}
    for path in glob.glob(osp.join(root, 'configs', '*', 'metafile.yml')):
        with open(path) as f:
            models = yaml.safe_load(f).get('Models', [])
        for model in models:
            token = name_token(model['Name'])
            source = model.get('Metadata', {}).get('Results Source', '')
            for result in model.get('Results') or []:
                task = by_task.get(result['Task'])
                values = {METAFILE_METRICS[k]: v for k, v in result['Metrics'].items()
                          if k in METAFILE_METRICS and v is not None}
                if task and values:  # box and mask AP may be two results
                    label = 'SPM paper' if source == 'paper-reported' else source
                    table.setdefault((task, token), ({}, label))[0].update(values)
    return table


def compare(row: Row, references: dict
            ) -> tuple[list[tuple[Optional[float], Optional[float]]], str, bool]:
    """Per column of the row's task (measured, reference) in percent, the
    reference's source, and whether the run's data is the paper's (same
    number of classes), without which no difference is given."""
    task = TASKS[row.task]
    ref, note = references.get((row.task, row.token), ({}, 'none'))
    comparable = row.num_classes in (None, task.num_classes)
    if not comparable:
        note += (f'; not comparable: {row.num_classes} classes, the paper\'s data '
                 f'has {task.num_classes}')
    values = []
    for column in task.columns:
        value = row.values.get(column.key)
        # COCO logs -1 where a size has no objects. 4 decimals, as the
        # codebases log them, drop float noise: the OneDL fork's mmseg
        # reports float32 (28.28 as 28.2800007).
        measured = round(value * column.scale, 4) if value is not None and value >= 0 else None
        values.append((measured, ref.get(column.label)))
    return values, note, comparable


def format_cell(measured: Optional[float], reference: Optional[float], comparable: bool) -> str:
    if measured is None:
        return '-' if reference is None else f'- ({reference:.1f})'
    if reference is None:
        return f'{measured:.1f}'
    if not comparable:
        return f'{measured:.1f} ({reference:.1f}, n/a)'
    return f'{measured:.1f} ({reference:.1f}, {measured - reference:+.1f})'


def markdown(rows: list[Row], references: dict) -> str:
    lines = []
    for key, task in TASKS.items():
        group = [r for r in rows if r.task == key]
        if not group:
            continue
        labels = [c.label for c in task.columns]
        lines += [f'### {task.title}', '',
                  '| backbone | ' + ' | '.join(labels)
                  + ' | reference | from | status | work dir |',
                  '|---|' + '---|' * (len(labels) + 4)]
        for row in group:
            values, note, comparable = compare(row, references)
            text = [format_cell(m, r, comparable) for m, r in values]
            lines.append(f'| {row.backbone} | ' + ' | '.join(text) +
                         f' | {note} | {row.source} | {row.status} | {row.work_dir} |')
        lines.append('')
    unknown = [r for r in rows if r.task is None]
    if unknown:
        lines += ['### Runs of no known task', '', '| work dir | status |', '|---|---|']
        lines += [f'| {r.work_dir} | {r.status} |' for r in unknown] + ['']
    lines.append('Cells: measured (reference, measured - reference), in percent; '
                 '"-": not logged. References: configs/*/metafile.yml.')
    return '\n'.join(lines) + '\n'


def write_csv(path: str, rows: list[Row], references: dict) -> None:
    """One line per work dir: every column's measured, reference and
    difference values, at the 4 decimals the codebases log."""
    columns = [c.label for task in TASKS.values() for c in task.columns]
    with open(path, 'x', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['task', 'backbone', 'work_dir', 'source', 'status', 'reference'] +
                        [f'{c}{s}' for c in columns for s in ('', ' ref', ' diff')])
        for row in rows:
            found, note, comparable = {}, '', False
            if row.task:
                values, note, comparable = compare(row, references)
                found = dict(zip([c.label for c in TASKS[row.task].columns], values))
            line = [TASKS[row.task].title if row.task else '', row.backbone, row.work_dir,
                    row.source, row.status, note]
            for c in columns:
                measured, ref = found.get(c, (None, None))
                diff = (round(measured - ref, 6) if comparable and None not in (measured, ref)
                        else None)
                line += ['' if v is None else v for v in (measured, ref, diff)]
            writer.writerow(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR')
    parser.add_argument('--out', help='also write the Markdown tables here')
    parser.add_argument('--csv', help='also write the numbers as CSV (4 decimals, as logged)')
    args = parser.parse_args()
    for path in (args.out, args.csv):
        if path and osp.exists(path):
            raise SystemExit(f'{path} exists; choose another name (never written over).')
    rows = []
    # Files are passed over: `work_dirs/demo/<run>/*` also names its logs.
    work_dirs = [w for p in args.work_dirs if osp.isdir(p) for w in work_dirs_in(p)]
    for work_dir in work_dirs:
        runs = find_runs(work_dir)
        if not runs:
            print(f'{work_dir}: no mmengine run (no <timestamp>/<timestamp>.log); skipped',
                  file=sys.stderr)
            continue
        rows.append(summarise(work_dir, runs))
    if not rows:
        raise SystemExit('no mmengine runs in the given work dirs.')
    references = reference_numbers()
    table = markdown(rows, references)
    print(table)
    if args.out:
        with open(args.out, 'x') as f:
            f.write(table)
    if args.csv:
        write_csv(args.csv, rows, references)


if __name__ == '__main__':
    main()
