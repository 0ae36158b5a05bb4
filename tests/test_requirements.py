"""requirements/check_torch.py, the gate of `make install OWN_TORCH=1`: it
pins the environment's torch/torchvision and refuses versions mmspm does not
support, naming the version it found (stand-in torch packages play the
environment's). setup.py and requirements/ agree."""
import ast
import glob
import os
import os.path as osp
import subprocess
import sys

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
    for name, source in (('torch', torch_source), ('torchvision', "__version__ = '0.1.0'")):
        (tmp_path / name).mkdir()
        (tmp_path / name / '__init__.py').write_text(source)
    return str(tmp_path)


def test_pins_the_installed_torch():
    proc = check()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f'torch=={torch.__version__}',
                                   f'torchvision=={torchvision.__version__}']


@pytest.mark.parametrize('version', ['2.3.1', '2.14.0+cu130', '1.13.1'])
def test_refuses_unsupported_versions(tmp_path, version):
    proc = check(fake_packages(tmp_path, f'__version__ = {version!r}'))
    assert proc.returncode != 0 and proc.stdout == ''
    assert f'torch {version} is not supported' in proc.stderr
    assert '2.4 to 2.13' in proc.stderr


def test_accepts_the_oldest_supported(tmp_path):
    proc = check(fake_packages(tmp_path, "__version__ = '2.4.0+cu121'"))
    assert proc.returncode == 0 and 'torch==2.4.0+cu121' in proc.stdout


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
