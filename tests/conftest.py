import random
import subprocess
import sys

import pytest
import torch

from tests.utils import (CLS_CONFIG, DET_CONFIG, ROOT, cls_options, det_options, metric,
                         reference_model, run)


# Fixtures that start subprocesses or train. A test that requests one, itself
# or through another fixture, is marked slow here; a test that starts a
# subprocess without one is marked by hand.
SLOW_FIXTURES = {'demo_data', 'classifier', 'detector_run'}


def pytest_addoption(parser):
    parser.addoption('--shuffle', type=int, metavar='SEED', default=None,
                     help='run the tests in an order shuffled with SEED (every test must '
                     'pass in any order)')


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.slow)
    seed = config.getoption('--shuffle')
    if seed is not None:
        random.Random(seed).shuffle(items)


@pytest.fixture
def loading_restored(monkeypatch):
    """For a test that forces weights-only loading (force_weights_only, or a
    tool's run_upstream): the process's loading as before, after it. (The
    variable is set, so that monkeypatch restores it after the change; on
    torch < 2.4 torch.load itself is replaced.)"""
    monkeypatch.setenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0')
    monkeypatch.setattr(torch, 'load', torch.load)


@pytest.fixture(autouse=True)
def _default_scope_restored():
    """mmengine's DefaultScope is process-wide: the latest one made (by a
    Runner, a config's build) redirects every registry's builds after it.
    Each test starts with none, so that neither an earlier test nor a module
    or session fixture (set up before this one) picks its registries, and
    ends with the scopes it found."""
    from mmengine.registry import DefaultScope
    before = dict(DefaultScope._instance_dict)
    DefaultScope._instance_dict.clear()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """A small copy of the embedded demo data, made by the real generator."""
    out = tmp_path_factory.mktemp('demo_data')
    subprocess.run([sys.executable, 'tools/make_demo_data.py', '--out', str(out),
                    '--num-train', '8', '--num-val', '4'], cwd=ROOT, check=True)
    return out


@pytest.fixture(scope='module')
def ref_tiny():
    """The naive reference SPM-PVT-T, norms away from identity, in eval mode."""
    torch.manual_seed(0)
    return reference_model('tiny')


@pytest.fixture(scope='module')
def ref_file(ref_tiny, tmp_path_factory):
    """ref_tiny saved as the authors save checkpoints (under 'model')."""
    path = tmp_path_factory.mktemp('ref') / 'spm_pvt_tiny_ref.pth'
    torch.save({'model': ref_tiny.state_dict()}, path)
    return path


@pytest.fixture(scope='session')
def classifier(demo_data, tmp_path_factory):
    """The demo classifier after one epoch of tools/train.py (session-wide:
    tests/test_tools/test_demo.py and tests/test_deployment.py share it)."""
    work_dir = tmp_path_factory.mktemp('cls')
    out = run(sys.executable, 'tools/train.py', CLS_CONFIG, '--work-dir', str(work_dir),
              *cls_options(demo_data))
    assert 0 <= metric(out, 'accuracy/top1') <= 100
    return work_dir / 'epoch_1.pth'


@pytest.fixture(scope='session')
def detector_run(classifier, demo_data, tmp_path_factory):
    """The demo detector trained from the classifier for 20 iterations (the
    fewest after which it detects something on the exported sizes): its
    last checkpoint, the training log and the options."""
    work_dir = tmp_path_factory.mktemp('det')
    epochs = 10  # 8 images, batch 4
    options = det_options(demo_data, epochs, from_scratch=False) + [
        f'model.backbone.init_cfg.checkpoint={classifier}', 'param_scheduler.0.end=10',
        'param_scheduler.1.milestones=[1000]', 'default_hooks.logger.interval=10']
    out = run(sys.executable, 'tools/train.py', DET_CONFIG, '--work-dir', str(work_dir),
              *options)
    return work_dir / f'epoch_{epochs}.pth', out, options
