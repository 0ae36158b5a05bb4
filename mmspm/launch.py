"""Run a config with the train/test script of the codebase it belongs to.

mmspm's configs are mmdet, mmseg or mmpretrain configs (their
``default_scope`` says which); ``tools/train.py`` and ``tools/test.py`` hand
them to that codebase's own script, the one ``mim train/test`` runs, so both
routes behave the same.
"""
import importlib
import os
import os.path as osp
import runpy
import sys

import torch
from mmengine.config import Config

CODEBASES = ('mmdet', 'mmseg', 'mmpretrain')


def config_scope(config: str) -> str:
    if not osp.isfile(config):
        raise SystemExit(f'Config {config!r} does not exist.')
    scope = Config.fromfile(config).get('default_scope')
    if scope not in CODEBASES:
        raise SystemExit(f'Config {config!r} has default_scope={scope!r}; '
                         f'mmspm configs belong to one of {CODEBASES}.')
    return scope


def upstream_script(scope: str, name: str) -> str:
    package_dir = osp.dirname(importlib.import_module(scope).__file__)
    return osp.join(package_dir, '.mim', 'tools', f'{name}.py')


def init_distributed() -> None:
    """Start the process group before mmengine does, choosing the backend.

    mmengine's 'pytorch' launcher calls ``torch.cuda.set_device`` and uses
    NCCL, so it cannot run on a machine without a GPU. With the group already
    up, mmengine uses it as it is.
    """
    if torch.distributed.is_initialized() or 'WORLD_SIZE' not in os.environ:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        torch.distributed.init_process_group('nccl')
    else:
        torch.distributed.init_process_group('gloo')


def run_upstream(name: str, argv: list[str]) -> None:
    """Run ``<scope>/.mim/tools/<name>.py`` with ``argv`` (config first)."""
    positional = [a for a in argv if not a.startswith('-')]
    if not positional:
        raise SystemExit(f'usage: tools/{name}.py CONFIG ... (see the '
                         f'options of mmdet/mmseg/mmpretrain tools/{name}.py)')
    script = upstream_script(config_scope(positional[0]), name)
    if '--launcher' in argv and argv[argv.index('--launcher') + 1] == 'pytorch':
        init_distributed()
    sys.argv = [script] + argv
    runpy.run_path(script, run_name='__main__')
