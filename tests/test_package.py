"""The package as installed: `mim search` lists the models of every metafile,
and the tools run from a copy of tools/ and configs/ with no tests/ beside
them (as under mmspm/.mim in a wheel)."""
import json
import os.path as osp
import shutil
import sys

import pytest
import yaml

from tests.utils import ROOT, run

pytestmark = pytest.mark.slow


def metafile_models() -> dict:
    index = yaml.safe_load(open(osp.join(ROOT, 'model-index.yml')))
    models = {}
    for path in index['Import']:
        models.update({m['Name']: m for m in yaml.safe_load(open(osp.join(ROOT, path)))['Models']})
    return models


def test_mim_search_lists_every_model():
    out = run('mim', 'search', 'mmspm')
    listed = {line.split(':', 1)[1].strip() for line in out.splitlines()
              if line.startswith('config id:')}
    assert listed == set(metafile_models())


def test_metafiles_use_mmdet_task_names():
    tasks = {'box AP': 'Object Detection', 'mask AP': 'Instance Segmentation',
             'mIoU': 'Semantic Segmentation', 'Top 1 Accuracy': 'Image Classification'}
    for name, model in metafile_models().items():
        for result in model['Results']:
            for metric in result['Metrics']:
                assert result['Task'] == tasks[metric], (name, metric, result['Task'])


def test_tools_run_without_the_repository(tmp_path):
    for name in ('tools', 'configs'):
        shutil.copytree(osp.join(ROOT, name), tmp_path / name)
    out = run(sys.executable, str(tmp_path / 'tools/analysis/get_flops.py'),
              '--what', 'backbones', '--archs', 't', cwd=tmp_path)
    assert 'SPM-PVT-T' in out and '14.03' in out, out
    out = run(sys.executable, str(tmp_path / 'tools/analysis/benchmark.py'),
              '--worker', 'spm-naive:64:128:100:168', '--repeat', '2', cwd=tmp_path)
    result = json.loads(out.strip().splitlines()[-1])
    assert result['min'] <= result['time'] <= result['max'], result
    # The step's own peak above the built model: at least the input's gradient
    # and the saved 2x64x100x168 float32 activations (8 MiB each).
    assert result['peak_mb'] > 16, result
