"""ONNX export (mmspm/deployment.py, tools/deployment/pytorch2onnx.py): each
model family exported once, run in onnxruntime at several sizes against
PyTorch eager (on a CPU: the chunked SPM path, while the graph holds the
loop-free one)."""
import onnx
import pytest
import torch
from mmengine.config import Config

from mmspm.deployment import ExportWrapper, export_onnx, load_model, run_onnxruntime
from tests.utils import DET_CONFIG, randomize_norm_stats, run

CLS_CONFIG = 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'
SEG_CONFIG = 'configs/semantic_fpn/fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py'
# Even; odd and not a multiple of 32; large enough that eager SPM at stage 2
# (128 channels, 20 windows a row) takes three chunks of window rows.
SIZES = [(128, 160), (97, 131), (256, 320)]


def model_of(config: str) -> torch.nn.Module:
    model = load_model(Config.fromfile(config))
    randomize_norm_stats(model)  # BN and LayerNorm away from the identity
    return model.eval()


def graph_facts(path) -> tuple[list, set, set]:
    """(input dimensions, operator types, operator domains) read with onnx."""
    graph = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    return dims, {n.op_type for n in graph.node}, {n.domain for n in graph.node}


def assert_portable(path) -> None:
    """Symbolic batch/height/width, default-domain operators, no sequences."""
    dims, ops, domains = graph_facts(path)
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], *dims[2:])), dims
    assert domains <= {'', 'ai.onnx'}, domains
    assert not [op for op in ops if 'Sequence' in op], ops
    assert onnx.load(str(path)).graph.input[0].name == 'input'


@pytest.fixture(scope='module')
def classifier_onnx(tmp_path_factory):
    model = model_of(CLS_CONFIG)
    path = tmp_path_factory.mktemp('onnx') / 'cls.onnx'
    export_onnx(model, str(path), (224, 224))
    return model, path


@pytest.fixture(scope='module')
def segmentor_onnx(tmp_path_factory):
    model = model_of(SEG_CONFIG)
    path = tmp_path_factory.mktemp('onnx') / 'seg.onnx'
    export_onnx(model, str(path), (128, 128))
    return model, path


@pytest.mark.slow
@pytest.mark.parametrize('hw', SIZES)
def test_classifier_in_onnxruntime(classifier_onnx, hw):
    model, path = classifier_onnx
    assert_portable(path)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        expected = model(x, mode='tensor')
    got = torch.from_numpy(run_onnxruntime(str(path), x))
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('hw', SIZES)
def test_segmentor_in_onnxruntime(segmentor_onnx, hw):
    model, path = segmentor_onnx
    assert_portable(path)
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        # mmseg's own inference: decode head, then resized to img_shape.
        expected = model.encode_decode(x, [dict(img_shape=hw)])
    got = torch.from_numpy(run_onnxruntime(str(path), x))
    assert got.shape == (1, 150, *hw)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    agree = (got.argmax(1) == expected.argmax(1)).float().mean()
    assert agree >= 0.999, agree


def test_wrapper_outputs_what_the_codebases_predict():
    """The exported function is mmpretrain's logits (softmax: its scores)
    and mmseg's resized logits, per pixel classes with argmax."""
    cls = model_of(CLS_CONFIG)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        scores = torch.stack([s.pred_score for s in cls.predict(x)])
        torch.testing.assert_close(ExportWrapper(cls)(x).softmax(1), scores)
    seg = model_of(SEG_CONFIG)
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        expected = seg.encode_decode(x, [dict(img_shape=(67, 45))])
        torch.testing.assert_close(ExportWrapper(seg)(x), expected)
        labels = ExportWrapper(seg, argmax=True)(x)
    assert torch.equal(labels, expected.argmax(1))


def test_refuses_what_it_cannot_export():
    with pytest.raises(ValueError, match='not implemented'):
        ExportWrapper(load_model(Config.fromfile(DET_CONFIG)))
    with pytest.raises(ValueError, match='argmax applies to segmentors only'):
        ExportWrapper(model_of(CLS_CONFIG), argmax=True)


@pytest.mark.slow
def test_tool_exports_a_checkpoint_and_verifies(tmp_path):
    """The CLI: a runner-style checkpoint of the demo segmentor in, an ONNX
    file with argmax output out; --verify compares it with PyTorch."""
    model = model_of('configs/demo/fpn_spm-pvt-t_demo.py')
    ckpt = tmp_path / 'seg.pth'
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, ckpt)
    out = tmp_path / 'seg.onnx'
    log = run('python', 'tools/deployment/pytorch2onnx.py', 'configs/demo/fpn_spm-pvt-t_demo.py',
              str(ckpt), '--out', str(out), '--shape', '96', '112', '--argmax', '--verify',
              '--cfg-options', 'model.backbone.init_cfg=None')
    assert 'agree on' in log, log
    assert_portable(out)
    x = torch.randn(1, 3, 75, 133)
    with torch.no_grad():
        expected = model.encode_decode(x, [dict(img_shape=(75, 133))]).argmax(1)
    got = torch.from_numpy(run_onnxruntime(str(out), x))
    assert (got == expected).float().mean() >= 0.999
