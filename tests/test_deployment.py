"""ONNX export (mmspm/deployment/, tools/deployment/pytorch2onnx.py): each
model family exported once, run in onnxruntime at several sizes against
PyTorch eager (on a CPU: the chunked SPM path, while the graph holds the
loop-free one)."""
import glob
import os.path as osp

import mmdet
import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mmspm.analysis import load_image
from mmspm.deployment import (EXPORT_TORCH, DetectorWrapper, ExportWrapper, export_onnx,
                              load_model, onnxruntime_outputs, paste_masks, run_onnxruntime)
from tests.utils import DET_CONFIG, NO_INIT, needs_torch, randomize_norm_stats, run

CLS_CONFIG = 'configs/imagenet/spm-pvt-t_8xb128_in1k.py'
SEG_CONFIG = 'configs/semantic_fpn/fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py'
# Even; odd and not a multiple of 32; large enough that eager SPM at stage 2
# (128 channels, 20 windows a row) takes three chunks of window rows.
SIZES = [(128, 160), (97, 131), (256, 320)]
# On the matrix's older torch (and Python 3.9, which has no wheels of
# requirements/deploy.txt) what exports is skipped; the rest runs.
EXPORTS = needs_torch(EXPORT_TORCH, 'ONNX export')


def model_of(config: str) -> torch.nn.Module:
    model = load_model(Config.fromfile(config))
    randomize_norm_stats(model)  # BN and LayerNorm away from the identity
    return model.eval()


def graph_facts(path) -> tuple[list, set, set]:
    """(input dimensions, operator types, operator domains) read with onnx."""
    import onnx
    graph = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    return dims, {n.op_type for n in graph.node}, {n.domain for n in graph.node}


def assert_portable(path, batch=None) -> None:
    """Symbolic batch (or ``batch``)/height/width, default-domain operators,
    no sequences."""
    dims, ops, domains = graph_facts(path)
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in dims[2:]), dims
    assert dims[0] == batch if batch else isinstance(dims[0], str) and dims[0], dims
    assert domains <= {'', 'ai.onnx'}, domains
    assert not [op for op in ops if 'Sequence' in op], ops
    import onnx
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
    # With the config in its metadata, for onnx_demo.
    export_onnx(model, str(path), (128, 128), cfg=Config.fromfile(SEG_CONFIG))
    return model, path


@EXPORTS
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


@EXPORTS
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


def mmdet_predict(model, x):
    """mmdet's own inference of a 1-image batch, in the input's coordinates."""
    from mmdet.structures import DetDataSample
    hw = tuple(x.shape[2:])
    sample = DetDataSample(metainfo=dict(img_shape=hw, ori_shape=hw, scale_factor=(1., 1.)))
    with torch.no_grad():
        return model.predict(x, [sample])[0].pred_instances


def mask_iou(a, b):
    union = (a | b).flatten(1).sum(1)
    assert (union > 0).all()
    return (a & b).flatten(1).sum(1) / union


def test_detector_wrapper_is_mmdet_predict():
    """The exported function, in PyTorch, is mmdet's Mask R-CNN predict."""
    cfg = Config.fromfile(DET_CONFIG)
    cfg.model.backbone.init_cfg = None
    # All classes among the detections: NMS per class is tested.
    cfg.model.test_cfg.rcnn.max_per_img = 100
    model = load_model(cfg)
    x = torch.randn(1, 3, 96, 136)
    expected = mmdet_predict(model, x)
    with torch.no_grad():
        boxes, scores, labels, masks = DetectorWrapper(model)(x)
    assert len(labels) == 100 and len(labels.unique()) == 3
    assert torch.equal(labels, expected.labels)
    torch.testing.assert_close(boxes, expected.bboxes)
    torch.testing.assert_close(scores, expected.scores)
    assert masks.shape == (100, 28, 28)
    assert torch.equal(paste_masks(masks, boxes, (96, 136)), expected.masks)


def test_refuses_what_it_cannot_export():
    faster = Config.fromfile(osp.join(
        osp.dirname(mmdet.__file__), '.mim', 'configs', 'faster_rcnn',
        'faster-rcnn_r50_fpn_1x_coco.py'))
    faster.model.backbone.init_cfg = None
    with pytest.raises(ValueError, match='got a FasterRCNN, which is not supported'):
        export_onnx(load_model(faster), 'never.onnx')
    soft = Config.fromfile(DET_CONFIG)
    soft.model.backbone.init_cfg = None
    soft.model.test_cfg.rcnn.nms.type = 'soft_nms'
    with pytest.raises(ValueError, match=r'test_cfg.rcnn.nms is .soft_nms. \(supported: nms'):
        DetectorWrapper(load_model(soft))
    with pytest.raises(ValueError, match='argmax applies to segmentors only'):
        ExportWrapper(model_of(CLS_CONFIG), argmax=True)


def test_export_names_the_torch_it_needs(monkeypatch, tmp_path):
    monkeypatch.setattr(torch, '__version__', '2.5.1')
    with pytest.raises(RuntimeError, match=r'ONNX export needs torch >= 2\.6 .*this environment '
                       r'has torch 2\.5\.1'):
        export_onnx(model_of(CLS_CONFIG), str(tmp_path / 'never.onnx'))
    assert not (tmp_path / 'never.onnx').exists()


@EXPORTS
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


@pytest.fixture(scope='module')
def detector_onnx(detector_run, demo_data, tmp_path_factory):
    """The briefly trained demo detector, exported once by the CLI (which
    --verify-ies it on a demo image)."""
    checkpoint = detector_run[0]
    path = tmp_path_factory.mktemp('onnx') / 'det.onnx'
    image = sorted(glob.glob(f'{demo_data}/coco/val2017/*.jpg'))[-1]
    log = run('python', 'tools/deployment/pytorch2onnx.py', DET_CONFIG, str(checkpoint),
              '--out', str(path), '--shape', '160', '192', '--verify', '--image', image,
              '--cfg-options', NO_INIT)
    assert 'lowest mask IoU' in log, log
    cfg = Config.fromfile(DET_CONFIG)
    cfg.model.backbone.init_cfg = None
    return cfg, load_model(cfg, str(checkpoint)), path


# The demo detector's size (even), odd and not a multiple of 32, several
# chunks; the briefly trained detector finds too little at smaller sizes.
DET_SIZES = [(192, 256), (177, 243), (256, 320)]


@EXPORTS
@pytest.mark.slow
@pytest.mark.parametrize('index,hw', list(enumerate(DET_SIZES)))
def test_detector_in_onnxruntime(detector_onnx, demo_data, index, hw):
    """Demo images at three sizes: the graph's detections are mmdet's."""
    cfg, model, path = detector_onnx
    assert_portable(path, batch=1)
    image = sorted(glob.glob(f'{demo_data}/coco/val2017/*.jpg'))[index + 1]
    _, x = load_image(image, hw, cfg)
    expected = mmdet_predict(model, x)
    boxes, scores, labels, masks = map(torch.from_numpy, onnxruntime_outputs(str(path), x))
    assert len(expected.labels) > 0  # something to compare
    assert torch.equal(labels, expected.labels)
    assert (boxes - expected.bboxes).abs().max() <= 1
    torch.testing.assert_close(scores, expected.scores, atol=1e-4, rtol=0)
    assert masks.shape == (len(labels), 28, 28)
    pasted = paste_masks(masks, boxes, hw, cfg.model.test_cfg.rcnn.mask_thr_binary)
    assert mask_iou(pasted, expected.masks).min() > 0.99


@EXPORTS
@pytest.mark.slow
def test_onnx_demo_draws_what_pytorch_predicts(segmentor_onnx, tmp_path):
    """onnx_demo.py (the file alone: its metadata holds the config) draws
    onnxruntime's classes, in each image's own size, as mmseg's own
    inference (test pipeline, test_step) drawn by the same visualizer."""
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import init_default_scope
    from mmseg.datasets import ADE20KDataset

    from mmspm.visualization import build_visualizer, draw_sample
    model, path = segmentor_onnx
    rng = np.random.default_rng(0)
    images = []
    for name, (h, w) in [('wide', (48, 64)), ('tall', (50, 37))]:
        ramp = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        pixels = np.clip(ramp + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        images.append(str(tmp_path / f'{name}.png'))
        Image.fromarray(pixels).save(images[-1])
    out = run('python', 'tools/deployment/onnx_demo.py', str(path), *images,
              '--out', str(tmp_path / 'onnx'))
    pictures = [line for line in out.splitlines() if line.endswith('.png')]
    assert [osp.basename(p) for p in pictures] == ['wide.png', 'tall.png'], out
    cfg = Config.fromfile(SEG_CONFIG)
    init_default_scope('mmseg')
    steps = [s for s in cfg.test_dataloader.dataset.pipeline if s.type != 'LoadAnnotations']
    visualizer = build_visualizer(cfg, ADE20KDataset.METAINFO, 'test_onnx_demo')
    for image, picture in zip(images, pictures):
        with torch.no_grad():
            sample = model.test_step(pseudo_collate([Compose(steps)(dict(img_path=image))]))[0]
        classes = sample.pred_sem_seg.data
        assert len(classes.unique()) > 1  # a picture with something to get wrong
        expected = str(tmp_path / f'torch_{osp.basename(picture)}')
        rgb = np.asarray(Image.open(image))
        draw_sample(visualizer, 'mmseg', 'x', rgb, sample, expected, draw_gt=False)
        got = np.asarray(Image.open(picture).convert('RGB'))
        assert got.shape == rgb.shape  # the image's own size, prediction only
        same = (got == np.asarray(Image.open(expected).convert('RGB'))).all(-1).mean()
        assert same >= 0.999, same
