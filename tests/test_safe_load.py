"""Reading checkpoints: damaged files named, pickled code refused on every
path, mmengine's own checkpoint types allowed."""
import os
import os.path as osp

import pytest
import torch
from mmengine.runner import load_checkpoint
from mmengine.utils import digit_version

import mmspm
from mmspm import SPMPVT, safe_load
from mmspm.safe_load import CheckpointError, force_weights_only
from mmspm.safe_load import load_checkpoint as safe_load_checkpoint
from mmspm.safe_load import load_file
from tests.utils import PAYLOAD_REFUSED, ROOT, Payload, reference_model


def payload_checkpoint(tmp_path, model: torch.nn.Module):
    """A checkpoint of ``model``'s weights whose unpickling would create
    ``tmp_path/pwned``."""
    target = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': dict(model.state_dict()), 'meta': Payload(str(target))}, path)
    return path, target


# The two ways mmspm reads pickles: torch's weights_only with mmengine's types
# added (torch >= 2.4), and its own restricted unpickler (older torch).
PATHS = [
    pytest.param(True, id='allow-list', marks=pytest.mark.skipif(
        not safe_load.HAS_SAFE_GLOBALS, reason='torch < 2.4 has no add_safe_globals')),
    pytest.param(False, id='restricted-unpickler'),
]


@pytest.fixture(params=PATHS)
def load_path(request, monkeypatch, loading_restored):
    """Each loading path in turn."""
    monkeypatch.setattr(safe_load, 'HAS_SAFE_GLOBALS', request.param)
    return request.param


def test_pickle_payload_is_refused(tmp_path, load_path):
    path, target = payload_checkpoint(tmp_path, reference_model('tiny'))
    model = SPMPVT('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError, match='refused'):
        model.init_weights()
    # mmengine's load_from / resume path, as tools/train.py and test.py run it.
    force_weights_only()
    with pytest.raises(Exception, match=PAYLOAD_REFUSED):
        load_checkpoint(SPMPVT('tiny'), str(path))
    assert not target.exists()


def test_mmengines_loader_is_as_safe_as_its_stack(tmp_path, monkeypatch):
    """Why the tools force weights_only: in a process that does not,
    mmengine's load_checkpoint refuses the payload on the OpenMMLab stack
    (mmengine 0.10.7 leaves torch's weights_only default), while the OneDL
    fork's retries a refused load with weights_only=False and runs it."""
    path, target = payload_checkpoint(tmp_path, SPMPVT('tiny'))
    monkeypatch.delenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', raising=False)
    # torch < 2.6 loads everything by default, whatever the stack.
    if mmspm.STACK == 'openmmlab' and digit_version(torch.__version__) >= digit_version('2.6'):
        with pytest.raises(Exception, match='Weights only load failed'):
            load_checkpoint(SPMPVT('tiny'), str(path))
        assert not target.exists()
    else:
        load_checkpoint(SPMPVT('tiny'), str(path))
        assert target.exists()


def test_forcing_weights_only_refuses_the_opposite_setting(monkeypatch):
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    monkeypatch.setenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0')
    with pytest.raises(SystemExit, match='TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set'):
        force_weights_only()
    assert os.environ['TORCH_FORCE_WEIGHTS_ONLY_LOAD'] == '0'


def test_truncated_and_corrupt_files(ref_file, tmp_path, load_path):
    data = ref_file.read_bytes()
    (tmp_path / 'truncated.pth').write_bytes(data[:len(data) // 3])
    (tmp_path / 'garbage.pth').write_bytes(b'not a checkpoint at all' * 10)
    (tmp_path / 'garbage.safetensors').write_bytes(b'\x00' * 64)
    for name in ('truncated.pth', 'garbage.pth', 'garbage.safetensors'):
        with pytest.raises(CheckpointError, match='corrupt or truncated|not a readable'):
            load_file(str(tmp_path / name))
    with pytest.raises(CheckpointError, match='does not exist'):
        load_file(str(tmp_path / 'nope.pth'))


def test_other_schemes_go_through_mmengines_loader(ref_file, tmp_path, monkeypatch, load_path):
    """A name with a scheme (here one registered for the test, standing in
    for https://) is read by the loader mmengine registered for it, still
    refusing pickled code; with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD set it is
    refused before anything is read."""
    from mmengine.runner import CheckpointLoader
    from mmengine.runner.checkpoint import load_from_local
    evil = tmp_path / 'evil.pth'
    torch.save({'meta': Payload(str(tmp_path / 'pwned'))}, evil)
    CheckpointLoader.register_scheme(
        'mmspm-test://', lambda name, map_location: load_from_local(
            str(tmp_path / name[len('mmspm-test://'):]), map_location), force=True)
    torch.save(torch.load(ref_file, weights_only=True), tmp_path / 'ref.pth')
    state = safe_load_checkpoint('mmspm-test://ref.pth')
    assert torch.equal(state['model']['pos_embed1'],
                       torch.load(ref_file, weights_only=True)['model']['pos_embed1'])
    with pytest.raises(CheckpointError, match='refused'):
        safe_load_checkpoint('mmspm-test://evil.pth')
    assert not (tmp_path / 'pwned').exists()
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(CheckpointError, match='TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'):
        safe_load_checkpoint('mmspm-test://ref.pth')


@pytest.mark.skipif(not safe_load.HAS_SAFE_GLOBALS, reason='torch < 2.4 has no allow-list '
                    '(mmspm reads through its restricted unpickler there)')
def test_loading_keeps_the_allow_list_registered(ref_file, tmp_path):
    """mmengine's own loads (resume, load_from) rely on the global allow-list:
    mmspm's loader must not remove it after use."""
    from mmengine.logging import HistoryBuffer
    load_file(str(ref_file))
    (tmp_path / 'garbage.pth').write_bytes(b'garbage')
    with pytest.raises(CheckpointError):
        load_file(str(tmp_path / 'garbage.pth'))
    assert HistoryBuffer in torch.serialization.get_safe_globals()
    path = tmp_path / 'runner_style.pth'
    buffer = HistoryBuffer()
    buffer.update(1e-4)
    torch.save({'message_hub': {'train/lr': buffer}}, path)
    assert isinstance(torch.load(path)['message_hub']['train/lr'], HistoryBuffer)


@pytest.mark.parametrize('name', ['runner_numpy1.pth', 'runner_numpy2.pth'])
def test_runner_checkpoints_of_numpy_1_and_2(name, load_path):
    """numpy pickles its arrays under numpy.core (1.x) or numpy._core (2.x):
    checkpoints of either load, through mmspm and through mmengine's resume /
    load_from (torch.load with its weights_only default)."""
    path = osp.join(ROOT, 'tests', 'data', 'checkpoints', name)
    force_weights_only()
    for checkpoint in (safe_load_checkpoint(path), torch.load(path)):
        lr = checkpoint['message_hub']['log_scalars']['train/lr']
        assert lr.data[0].tolist() == [0.01, 0.01]  # 2 iterations at lr 0.01
