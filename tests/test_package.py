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


def metafile_models() -> dict:
    index = yaml.safe_load(open(osp.join(ROOT, 'model-index.yml')))
    models = {}
    for path in index['Import']:
        models.update({m['Name']: m for m in yaml.safe_load(open(osp.join(ROOT, path)))['Models']})
    return models


@pytest.mark.slow
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


@pytest.mark.slow
def test_tools_run_without_the_repository(tmp_path):
    for name in ('tools', 'configs'):
        shutil.copytree(osp.join(ROOT, name), tmp_path / name)
    out = run(sys.executable, str(tmp_path / 'tools/analysis/get_flops.py'),
              '--what', 'backbones', '--archs', 't', cwd=tmp_path)
    assert 'SPM-PVT-T' in out and '14.03' in out, out
    out = run(sys.executable, str(tmp_path / 'tools/analysis/benchmark.py'),
              '--worker', 'spm-naive:64:128:100:168', '--repeat', '2', cwd=tmp_path)
    # The worker's one line of JSON (its stderr may follow it in out).
    result = json.loads([line for line in out.splitlines() if line.startswith('{')][-1])
    assert result['min'] <= result['time'] <= result['max'], result
    # The step's own peak above the built model: at least the input's gradient
    # and the saved 2x64x100x168 float32 activations (8 MiB each).
    assert result['peak_mb'] > 16, result


def test_install_requires_hold_for_the_pinned_stack():
    """setup.py's runtime requirements and the extra of the installed stack
    (as installed metadata) are met by the stack requirements/ pins: neither
    contradicts the other."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    import mmspm
    needs = [Requirement(r) for r in requires('mmspm')]
    core = [r for r in needs if r.marker is None]
    stack = [r for r in needs if r.marker is not None and r.name != 'pytest'
             and r.marker.evaluate({'extra': mmspm.STACK})]
    assert {r.name for r in core} == {'torch', 'numpy', 'safetensors'}
    assert len(stack) == 5, stack  # mmengine, mmcv, mmdet, mmseg, mmpretrain
    for requirement in core + stack:
        assert requirement.specifier.contains(version(requirement.name), prereleases=True), \
            (str(requirement), version(requirement.name))


def test_metafile_names_carry_their_backbone():
    """collect_results.py matches runs with the metafiles' numbers by the
    backbone token of the model name; it must be the config's backbone."""
    from mmengine.config import Config

    from mmspm.analysis import backbone_token, name_token
    for name, model in metafile_models().items():
        cfg = Config.fromfile(osp.join(ROOT, model['Config']), import_custom_modules=False)
        assert backbone_token(cfg.model.backbone) == name_token(name), name
