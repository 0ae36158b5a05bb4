"""requirements/check_torch.py, the gate of `make install OWN_TORCH=1` and
`TORCH=...`: it pins the environment's torch/torchvision/numpy and refuses
versions mmspm does not support, naming the version it found (stand-in torch
packages play the environment's). setup.py and requirements/ agree, and
installing mmspm changes nothing of the environment."""
import ast
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import numpy
import pytest
import torch
import torchvision
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.utils import ROOT


def check(pythonpath: str = '') -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    return subprocess.run([sys.executable, 'requirements/check_torch.py'], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def fake_packages(tmp_path, torch_source: str):
    for name, source in (('torch', torch_source), ('torchvision', "__version__ = '0.1.0'"),
                         ('numpy', "__version__ = '1.26.4'")):
        (tmp_path / name).mkdir()
        (tmp_path / name / '__init__.py').write_text(source)
    return str(tmp_path)


def test_pins_the_installed_torch():
    proc = check()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f'torch=={torch.__version__}',
                                   f'torchvision=={torchvision.__version__}',
                                   f'numpy=={numpy.__version__}']


@pytest.mark.parametrize('version', ['2.0.1', '2.15.0+cu130', '1.13.1'])
def test_refuses_unsupported_versions(tmp_path, version):
    proc = check(fake_packages(tmp_path, f'__version__ = {version!r}'))
    assert proc.returncode != 0 and proc.stdout == ''
    assert f'torch {version} is not supported' in proc.stderr
    assert '2.1 to 2.14' in proc.stderr


@pytest.mark.parametrize('version', ['2.1.2+cu121', '2.14.1'])
def test_accepts_the_oldest_and_newest_tested(tmp_path, version):
    proc = check(fake_packages(tmp_path, f'__version__ = {version!r}'))
    assert proc.returncode == 0 and f'torch=={version}' in proc.stdout


@pytest.mark.parametrize('version,expected', [
    ('2.1.2', ['torch==2.1.2', 'torchvision==0.16.*', 'numpy<2']),
    ('2.13.0', ['torch==2.13.0', 'torchvision==0.28.*', 'numpy>=2,<3']),
    ('2.14.1', ['torch==2.14.1', 'torchvision==0.29.*', 'numpy>=2,<3']),
])
def test_pins_of_a_matrix_combination(version, expected):
    """`make test TORCH=...`: torch with the torchvision built for it (as
    requirements/torch.txt pairs 2.13.0 with 0.28.0) and a numpy it runs with."""
    proc = subprocess.run([sys.executable, 'requirements/check_torch.py', '--pins', version],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.split() == expected


def test_pins_refuse_an_untested_torch():
    proc = subprocess.run([sys.executable, 'requirements/check_torch.py', '--pins', '2.15.0'],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and 'TORCH=2.15.0: torch 2.15.0 is not supported' in proc.stderr


def test_names_a_missing_torch(tmp_path):
    proc = check(fake_packages(tmp_path, "raise ModuleNotFoundError('no torch', name='torch')"))
    assert proc.returncode != 0 and 'has no torch' in proc.stderr


def _requirements(lines) -> dict:
    reqs = (Requirement(line.split('#')[0]) for line in lines
            if line.split('#')[0].strip() and not line.startswith('-'))
    return {canonicalize_name(r.name): r.specifier for r in reqs}


def test_setup_py_and_requirements_agree():
    """What requirements/ installs (either stack), setup.py accepts: a
    package requirements/ constrains is constrained in setup.py too (its own
    requirements or the stack's extra), and every version that requirements/
    names lies within setup.py's range."""
    from mmspm.stacks import extras
    tree = ast.parse(open(osp.join(ROOT, 'setup.py')).read())
    setup = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, 'id', '') == 'setup')
    install_requires = next(ast.literal_eval(k.value) for k in setup.keywords
                            if k.arg == 'install_requires')
    declared = _requirements(install_requires + sum(extras().values(), []))
    pinned: dict = {}
    for path in glob.glob(osp.join(ROOT, 'requirements', '**', '*.txt'), recursive=True):
        for name, spec in _requirements(open(path).read().splitlines()).items():
            pinned.setdefault(name, []).append(spec)
    assert {'onedl-mmdetection', 'mmdet', 'numpy'} <= pinned.keys()
    for name in declared.keys() & pinned.keys():
        for spec in (s for specs in pinned[name] for s in specs):
            assert declared[name], f'setup.py accepts any {name}, requirements/ {spec}'
            if spec.operator in ('==', '>=', '~='):
                assert spec.version in declared[name], (name, str(spec), str(declared[name]))


def test_installing_mmspm_pulls_neither_stack():
    """setup.py's own requirements name no package of either stack: each
    stack is an extra, so `pip install mmspm` into the OneDL fork's
    environment does not bring the OpenMMLab releases over it."""
    from mmspm.stacks import STACKS
    tree = ast.parse(open(osp.join(ROOT, 'setup.py')).read())
    install_requires = next(ast.literal_eval(k.value) for n in ast.walk(tree)
                            if isinstance(n, ast.Call) for k in n.keywords
                            if k.arg == 'install_requires')
    stack_dists = {canonicalize_name(dist) for modules in STACKS.values()
                   for dist, _ in modules.values()}
    assert set(_requirements(install_requires)) == {'torch', 'numpy', 'safetensors'}
    assert not stack_dists & set(_requirements(install_requires))


def test_installing_mmspm_changes_nothing_of_the_environment():
    """pip's own resolution of `pip install -e .` here (and in each
    environment of the matrix, `make test TORCH=...`, oldest and newest
    torch): it installs mmspm, replacing no torch, torchvision, numpy or
    package of either stack (mmcv's ops are built for the torch there).
    With setup.py's former torch>=2.4, pip installed torch 2.8 over 2.1.2."""
    from mmspm.stacks import STACKS
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--quiet',
                           '--no-build-isolation', '--report', '-', '-e', ROOT],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    installs = {canonicalize_name(item['metadata']['name'])
                for item in json.loads(proc.stdout)['install']}
    kept = {'torch', 'torchvision', 'numpy'} | {
        canonicalize_name(dist) for modules in STACKS.values() for dist, _ in modules.values()}
    assert 'mmspm' in installs and not installs & kept, installs
