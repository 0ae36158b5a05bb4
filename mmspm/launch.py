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


def load_config(config: str) -> Config:
    if not osp.isfile(config):
        raise SystemExit(f'Config {config!r} does not exist.')
    cfg = Config.fromfile(config)
    if cfg.get('default_scope') not in CODEBASES:
        raise SystemExit(f'Config {config!r} has default_scope='
                         f'{cfg.get("default_scope")!r}; mmspm configs belong '
                         f'to one of {CODEBASES}.')
    return cfg


def upstream_script(scope: str, name: str) -> str:
    package_dir = osp.dirname(importlib.import_module(scope).__file__)
    return osp.join(package_dir, '.mim', 'tools', f'{name}.py')


def init_distributed(cfg: Config, argv: list[str]) -> list[str]:
    """Start the process group before mmengine does, choosing the backend.

    mmengine's 'pytorch' launcher calls ``torch.cuda.set_device`` and uses
    NCCL, and wraps the model in DDP with ``device_ids=[LOCAL_RANK]``, so it
    cannot run on a machine without a GPU. With the group already up mmengine
    uses it as it is; on a CPU the DDP wrapper is configured without device
    ids. Returns ``argv`` with that setting added.
    """
    if torch.distributed.is_initialized() or 'WORLD_SIZE' not in os.environ:
        return argv
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        torch.distributed.init_process_group('nccl')
        return argv
    torch.distributed.init_process_group('gloo')
    if cfg.get('model_wrapper_cfg') is not None:
        return argv
    options = ['model_wrapper_cfg.type=MMDistributedDataParallel',
               'model_wrapper_cfg.device_ids=None',
               'model_wrapper_cfg.broadcast_buffers=False',
               f'model_wrapper_cfg.find_unused_parameters='
               f'{cfg.get("find_unused_parameters", False)}']
    if '--cfg-options' in argv:  # a second flag would replace the user's
        i = argv.index('--cfg-options') + 1
        return argv[:i] + options + argv[i:]
    return argv + ['--cfg-options'] + options


def run_upstream(name: str, argv: list[str]) -> None:
    """Run ``<scope>/.mim/tools/<name>.py`` with ``argv`` (config first)."""
    positional = [a for a in argv if not a.startswith('-')]
    if not positional:
        raise SystemExit(f'usage: tools/{name}.py CONFIG ... (see the '
                         f'options of mmdet/mmseg/mmpretrain tools/{name}.py)')
    cfg = load_config(positional[0])
    script = upstream_script(cfg.default_scope, name)
    if '--launcher' in argv and argv[argv.index('--launcher') + 1] == 'pytorch':
        argv = init_distributed(cfg, argv)
    sys.argv = [script] + argv
    runpy.run_path(script, run_name='__main__')
