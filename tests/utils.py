"""Helpers shared by the tests: paths, subprocess runs, demo-run options,
reference models and checkpoints built from them."""
import glob
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from mmengine.utils import digit_version

from mmspm import SPMPVT
from mmspm.models.spm_pvt_checkpoints import split_checkpoint
from mmspm.testing import RefSPMPVT

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BIN = osp.dirname(sys.executable)
SEG_CONFIG = 'configs/demo/fpn_spm-pvt-t_demo.py'
DET_CONFIG = 'configs/demo/mask-rcnn_spm-pvt-t_fpn_demo.py'
CLS_CONFIG = 'configs/demo/spm-pvt-t_cls_demo.py'
# The demo configs initialise the backbone from the demo classifier; runs
# that start from scratch disable it (tests/test_tools/test_demo.py covers it).
NO_INIT = 'model.backbone.init_cfg=None'
# float32 outputs of two computations that do not run the same kernels (the
# same model on another CPU, where oneDNN picks other kernels; recorded data;
# another implementation, another order of summation) agree to a few units in
# the last place of each operation, which a network accumulates: 1.13e-6 was
# seen between two x86 CPUs on a small SPM-PVT. Bitwise equality (rtol=atol=0,
# torch.equal) only where the same kernels run on both sides.
FLOAT32 = dict(rtol=1e-5, atol=1e-5)


# What a refused pickled payload says: torch's weights-only unpickler (torch
# >= 2.4) or mmspm's restricted one (older torch).
PAYLOAD_REFUSED = r'Weights only load failed|is not allowed in a checkpoint'


def needs_torch(version: str, feature: str) -> pytest.MarkDecorator:
    """Skips a test of ``feature`` where torch is older than ``version`` (the
    oldest environment of the matrix, docs/install.md)."""
    return pytest.mark.skipif(digit_version(torch.__version__) < digit_version(version),
                              reason=f'{feature} needs torch >= {version}, this is torch '
                              f'{torch.__version__}')


def run(*args: str, cwd: str = ROOT) -> str:
    """Run a command (from the repository root) with .venv's bin on PATH; its output."""
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, PATH=f'{BIN}:{os.environ["PATH"]}'))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{" ".join(args)} failed:\n{out[-4000:]}'
    return out


def free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def launch_env() -> dict:
    """For tools/dist_*.sh: a free port each, and .venv's python."""
    return dict(os.environ, PATH=f'{BIN}:{os.environ["PATH"]}', PORT=free_port(),
                PYTHON=sys.executable)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in glob.glob('/proc/[0-9]*/stat'):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.split('/')[2]))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def kill_after_checkpoint(cmd: list[str], work_dir, name: str) -> None:
    """Start a training run and SIGKILL all its processes as soon as checkpoint
    ``name`` is complete (CheckpointHook names it in ``last_checkpoint`` once
    it is written)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env=launch_env())
    last = work_dir / 'last_checkpoint'
    deadline = time.time() + 600
    while not (last.is_file() and last.read_text().endswith(name)):
        assert proc.poll() is None, 'training ended before it could be killed'
        assert time.time() < deadline, f'{name} not written in 10 minutes'
        time.sleep(0.1)
    # torchrun starts its workers in sessions of their own: kill the whole
    # tree, as a machine that goes down would.
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def metric(output: str, name: str) -> float:
    """The last value logged for ``name`` (mmengine: 'name: value')."""
    values = re.findall(rf'{re.escape(name)}: (-?\d+\.\d+)', output)
    assert values, f'{name} not in the output:\n{output[-2000:]}'
    return float(values[-1])


def seg_options(demo_data, iters: int) -> list[str]:
    root = f'{demo_data}/ade/'
    return ['--cfg-options', f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}',
            f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'param_scheduler.0.end={iters}', 'default_hooks.checkpoint.interval=20',
            'default_hooks.checkpoint.max_keep_ckpts=2', NO_INIT]


def cls_options(demo_data) -> list[str]:
    root = f'{demo_data}/imagenet/'
    return ['--cfg-options', f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', 'train_dataloader.batch_size=4',
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
            'default_hooks.checkpoint.interval=1']


def det_options(demo_data, epochs: int = 1, from_scratch: bool = True) -> list[str]:
    root = f'{demo_data}/coco/'
    ann = f'{root}annotations/instances_val2017.json'
    return ['--cfg-options', f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}',
            f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}',
            f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'default_hooks.checkpoint.interval={epochs}'] + ([NO_INIT] if from_scratch else [])


def seg_sample(hw: tuple[int, int], num_classes: int):
    """An mmseg ``SegDataSample`` of an unpadded ``hw`` image with random
    ground-truth classes."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(img_shape=hw, ori_shape=hw, pad_shape=hw))
    sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, *hw)))
    return sample


def randomize_norm_stats(model: torch.nn.Module) -> None:
    """BatchNorm running stats/affine away from identity so eval mode is tested."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def reference_model(arch: str = 'tiny') -> RefSPMPVT:
    ref = RefSPMPVT(arch)
    randomize_norm_stats(ref)
    return ref.eval()


def backbone_state(ref: RefSPMPVT) -> dict:
    return split_checkpoint(ref.state_dict())[0]


def dense_from(checkpoint) -> SPMPVT:
    model = SPMPVT('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    model.init_weights()
    return model.eval()


def assert_dense_equals_reference(model: SPMPVT, ref, hw=(224, 224)):
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        maps, _ = ref.forward_features(x)
        outs = model(x)
    for ours, theirs in zip(outs[:3], maps):
        torch.testing.assert_close(ours, theirs, **FLOAT32)


def reference_pvt_v1_state(ref) -> dict:
    """The official PVT v1 layout: the reference model's keys with 2x2
    stride-2 convolutions (and LayerNorms) as stage 2-4 patch embeddings."""
    state = {k: v for k, v in ref.state_dict().items()
             if not k.startswith(('patch_embed2.', 'patch_embed3.', 'patch_embed4.'))}
    dims = (64, 128, 320, 512)
    for i in (2, 3, 4):
        state[f'patch_embed{i}.proj.weight'] = torch.randn(dims[i - 1], dims[i - 2], 2, 2)
        state[f'patch_embed{i}.proj.bias'] = torch.randn(dims[i - 1])
        state[f'patch_embed{i}.norm.weight'] = torch.randn(dims[i - 1])
        state[f'patch_embed{i}.norm.bias'] = torch.randn(dims[i - 1])
    return state


class Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


MANIFESTS = osp.join(ROOT, 'tests', 'data', 'manifests')


def manifest(name: str) -> dict:
    """The key/shape manifest of a release checkpoint (tests/data/manifests)."""
    import json
    with open(osp.join(MANIFESTS, f'{name}.json')) as f:
        return json.load(f)


def release_checkpoint(name: str, path, seed: int = 0) -> dict:
    """Save at ``path`` a checkpoint with the exact keys, shapes, dtypes and
    wrapping of release ``name`` (random values; integer buffers in range of
    their tables); returns its state dict."""
    m = manifest(name)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in m['keys'].items():
        dtype = getattr(torch, m['dtypes'].get(k, 'float32'))
        if dtype.is_floating_point:
            state[k] = torch.randn(shape, generator=gen).to(dtype)
        else:
            state[k] = torch.randint(0, 9, shape, generator=gen, dtype=dtype)
    torch.save({m['wrap']: state} if m['wrap'] else state, path)
    return state
