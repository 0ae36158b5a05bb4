"""mmspm.stacks: which OpenMMLab stack is installed, and what a user is told
when none, a mix, or an unsupported version is."""
import json
import subprocess
import sys

import pytest
from packaging.utils import canonicalize_name

from mmspm.stacks import STACKS, check, installed, problems


def found(stack: str, **versions: str) -> dict:
    return {m: (stack, STACKS[stack][m][0], v) for m, v in versions.items()}


def test_the_installed_stack_is_the_one_pip_lists():
    """check() against pip's own list of this environment (read apart from
    importlib.metadata, which check() uses): every distribution of the stack
    it names is installed, at the version installed() gives, and none of the
    other stack's."""
    stack = check()
    listed = {canonicalize_name(d['name']): d['version'] for d in json.loads(subprocess.run(
        [sys.executable, '-m', 'pip', 'list', '--format', 'json'], capture_output=True,
        text=True, check=True).stdout)}
    modules = installed()
    assert set(modules) == set(STACKS[stack])
    for module, (dist, _) in STACKS[stack].items():
        assert listed[canonicalize_name(dist)] == modules[module][2], dist
    other = {canonicalize_name(dist) for s, modules in STACKS.items() if s != stack
             for dist, _ in modules.values()}
    assert not other & set(listed)


@pytest.mark.parametrize('stack,versions', [
    ('openmmlab', dict(mmengine='0.10.7', mmcv='2.1.0', mmdet='3.3.0')),
    ('onedl', dict(mmengine='0.10.12', mmcv='2.3.6', mmdet='3.5.1', mmseg='1.4.2',
                   mmpretrain='1.3.6')),
])
def test_a_supported_stack_has_no_problems(stack, versions):
    assert problems(found(stack, **versions)) == []


def test_what_is_wrong_is_named_with_the_fix():
    mixed = {**found('onedl', mmengine='0.10.12'),
             **found('openmmlab', mmcv='2.1.0', mmdet='3.3.0')}
    missing = found('onedl', mmengine='0.10.12', mmcv='2.3.6')
    old = found('openmmlab', mmengine='0.10.7', mmcv='2.2.0', mmdet='3.3.0+cu12')
    fix = "pip install 'mmspm[openmmlab]'"
    [error] = problems(mixed)
    assert 'both stacks' in error and 'onedl-mmengine 0.10.12' in error and fix in error
    [error] = problems(missing)
    assert 'needs mmdet, not installed' in error and fix in error
    [error] = problems(old)
    assert 'mmcv>=2.0.0,<2.2.0' in error and 'found 2.2.0' in error and fix in error
