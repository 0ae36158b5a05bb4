"""Run a config with the train/test script of the codebase it belongs to.

mmspm's configs are mmdet, mmseg or mmpretrain configs (their
``default_scope`` says which); ``tools/train.py`` and ``tools/test.py`` hand
them to that codebase's own script, the one ``mim train/test`` runs, so both
routes behave the same.
"""
import argparse
import importlib
import importlib.util
import logging
import os
import os.path as osp
import runpy
import sys
import sysconfig

import torch
from mmengine.config import Config, DictAction

from .registry import CODEBASES
from .safe_load import force_weights_only

DEMO_DATA = 'data/demo'
# The data layout each codebase's full-size configs expect (README, "Data").
DATA_LAYOUTS = {
    'mmdet': 'COCO 2017 as data/coco/annotations/instances_{train,val}2017.json '
             'and data/coco/{train,val}2017/*.jpg',
    'mmseg': 'ADE20K as data/ade/ADEChallengeData2016/images/{training,validation}'
             '/*.jpg and data/ade/ADEChallengeData2016/annotations/'
             '{training,validation}/*.png',
    'mmpretrain': 'ImageNet-1K as data/imagenet/{train,val}/ with the file '
                  'lists data/imagenet/meta/{train,val}.txt',
}


def load_config(config: str) -> Config:
    """Read an mmspm config.

    Args:
        config (str): The config file.

    Returns:
        Config: The config.

    Raises:
        SystemExit: If the file does not exist, inherits from a codebase
            installed under another distribution name (with the fix), or its
            ``default_scope`` is not one of :data:`mmspm.registry.CODEBASES`.
    """
    if not osp.isfile(config):
        raise SystemExit(f'Config {config!r} does not exist.')
    try:
        cfg = Config.fromfile(config)
    except ModuleNotFoundError as e:
        unresolved = _unresolved_scope(str(e))
        if unresolved is None:
            raise
        module, dist = unresolved
        purelib = sysconfig.get_paths()['purelib']
        raise SystemExit(
            f'Config {config!r} inherits from {module}::..., which mmengine looks '
            f'up as the distribution {dist!r}; this environment has {module} from '
            f'another distribution (the OneDL fork\'s). Link it where mmengine looks: '
            f'ln -s {module} {osp.join(purelib, dist)} (docs/install.md).') from e
    if cfg.get('default_scope') not in CODEBASES:
        raise SystemExit(f'Config {config!r} has default_scope='
                         f'{cfg.get("default_scope")!r}; mmspm configs belong '
                         f'to one of {CODEBASES}.')
    return cfg


def _unresolved_scope(message: str):
    """``(module, distribution)`` when ``message`` is mmengine's "<dist> is
    not installed" for a config scope whose module is installed under
    another distribution name; None otherwise."""
    from mmengine.config.utils import MODULE2PACKAGE
    for module, dist in MODULE2PACKAGE.items():
        if message.startswith(f'{dist} is not installed') and \
                importlib.util.find_spec(module) is not None:
            return module, dist
    return None


def _dataset_paths(dataset: dict) -> list[str]:
    """The files and folders a dataset config reads (wrappers unwrapped)."""
    if 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset, ...
        return _dataset_paths(dataset['dataset'])
    if 'datasets' in dataset:  # ConcatDataset
        return [p for d in dataset['datasets'] for p in _dataset_paths(d)]
    root = dataset.get('data_root') or ''
    paths = [root] if root else []
    prefix = dataset.get('data_prefix') or {}
    names = [dataset.get('ann_file') or '', dataset.get('split') or '',
             *(prefix.values() if isinstance(prefix, dict) else [prefix])]
    paths += [osp.join(root, n) for n in names if n]
    return paths


def check_data(cfg: Config, mode: str) -> None:
    """Exit with a message naming the missing data and the fix.

    This happens before a dataset fails deep inside its loader (pycocotools,
    say).

    Args:
        cfg (Config): The config.
        mode (str): 'train' (the train and, with ``val_cfg``, val data) or
            another (the test data).

    Raises:
        SystemExit: If a file or folder of the data is missing.
    """
    parts = (['train', 'val'] if cfg.get('val_cfg') else ['train']) \
        if mode == 'train' else ['test']
    paths = []
    for part in parts:
        loader = cfg.get(f'{part}_dataloader')
        if loader:
            paths += _dataset_paths(loader.get('dataset', {}))
        evaluators = cfg.get(f'{part}_evaluator') or []
        for evaluator in evaluators if isinstance(evaluators, list) else [evaluators]:
            if evaluator.get('ann_file'):
                paths.append(evaluator['ann_file'])
    missing = next((p for p in paths if '://' not in p and not osp.exists(p)), None)
    if missing is None:
        return
    missing = osp.normpath(missing)
    demo_config = osp.basename(osp.dirname(cfg.filename or '')) == 'demo'
    if demo_config or missing.startswith(DEMO_DATA):
        fix = (f'this is the embedded demo data: generate it with `make demo` '
               f'or `python tools/make_demo_data.py --out {DEMO_DATA}`.')
    else:
        fix = (f'{cfg.default_scope} configs expect '
               f'{DATA_LAYOUTS[cfg.default_scope]} (docs/reproduce.md, section "1. Data"); '
               f'link or copy the data set there, or point the config at it with '
               f"--cfg-options {parts[0]}_dataloader.dataset.data_root=PATH.")
    raise SystemExit(f'Data set not found: {missing!r} does not exist '
                     f'(relative to {os.getcwd()}); {fix}')


def upstream_script(scope: str, name: str) -> str:
    """The path of a codebase's own script.

    Args:
        scope (str): The codebase (its module name).
        name (str): The script's name, e.g. 'train' or 'test'.

    Returns:
        str: ``<scope>/.mim/tools/<name>.py``.
    """
    package_dir = osp.dirname(importlib.import_module(scope).__file__)
    return osp.join(package_dir, '.mim', 'tools', f'{name}.py')


def init_distributed(cfg: Config, argv: list[str]) -> list[str]:
    """Start the process group before mmengine does, choosing the backend.

    mmengine's 'pytorch' launcher calls ``torch.cuda.set_device`` and uses
    NCCL, and wraps the model in DDP with ``device_ids=[LOCAL_RANK]``, so it
    cannot run on a machine without a GPU. With the group already up mmengine
    uses it as it is; on a CPU the DDP wrapper is configured without device
    ids.

    Args:
        cfg (Config): The config.
        argv (list[str]): The command line.

    Returns:
        list[str]: ``argv`` with that setting added.
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


def _cfg_options(argv: list[str]) -> dict:
    """The ``--cfg-options`` of a command line, as the upstream scripts read them."""
    if '--cfg-options' not in argv:
        return {}
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_known_args(argv)[0].cfg_options or {}


def launcher_of(argv: list[str]) -> str:
    """The ``--launcher`` of a command line.

    Args:
        argv (list[str]): The command line.

    Returns:
        str: The launcher, given as ``--launcher X`` or ``--launcher=X`` (as
        argparse takes both); ``'none'`` without one.

    Raises:
        SystemExit: If ``--launcher`` has no value.
    """
    for i, arg in enumerate(argv):
        if arg.startswith('--launcher='):
            return arg.split('=', 1)[1]
        if arg == '--launcher':
            if i + 1 == len(argv) or argv[i + 1].startswith('-'):
                raise SystemExit('--launcher needs a value: none, pytorch, slurm or '
                                 'mpi (e.g. --launcher pytorch).')
            return argv[i + 1]
    return 'none'


def run_upstream(name: str, argv: list[str]) -> None:
    """Run ``<scope>/.mim/tools/<name>.py`` with ``argv``.

    Every checkpoint is read weights-only
    (:func:`~mmspm.safe_load.force_weights_only`).

    Args:
        name (str): The script's name, e.g. 'train' or 'test'.
        argv (list[str]): Its command line, config first.
    """
    force_weights_only()
    positional = [a for a in argv if not a.startswith('-')]
    if not positional:
        raise SystemExit(f'usage: tools/{name}.py CONFIG ... (see the '
                         f'options of mmdet/mmseg/mmpretrain tools/{name}.py)')
    cfg = load_config(positional[0])
    cfg.merge_from_dict(_cfg_options(argv))
    check_data(cfg, name)
    script = upstream_script(cfg.default_scope, name)
    if launcher_of(argv) == 'pytorch':
        argv = init_distributed(cfg, argv)
    sys.argv = [script] + argv
    runpy.run_path(script, run_name='__main__')
    # Not on an exception: a barrier would wait for the peers that torchrun is
    # about to stop.
    exit_distributed()


def exit_distributed() -> None:
    """End a process of a distributed run at once.

    In a process of a distributed run (a process group is up): wait for
    every process to finish, destroy the group and end the process at once,
    skipping the interpreter's teardown.

    Left to that teardown, the group and its gloo/NCCL threads outlive Python:
    DDP's reducer keeps the group alive even after ``destroy_process_group``
    (measured on torch 2.13: its worker threads still run), and a thread that
    touches a Python object while the interpreter finalises is ended inside a
    C++ destructor, so the process aborts with "terminate called without an
    active exception", at random and more often on a loaded machine. Logs and
    output streams are flushed first; nothing else is left to run.
    """
    if not torch.distributed.is_initialized():
        return
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
