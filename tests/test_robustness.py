"""Bad and unusual inputs through the real pipelines: handled or clearly refused."""
import copy
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from tests.utils import ROOT

SEG_CONFIG = osp.join(ROOT, 'configs/demo/fpn_spm-pvt-t_demo.py')
DET_CONFIG = osp.join(ROOT, 'configs/demo/mask-rcnn_spm-pvt-t_fpn_demo.py')
SIZES = [(1, 1), (2, 3), (7, 9), (16, 16), (31, 31), (33, 47)]


def write_images(tmp_path) -> dict:
    rng = np.random.default_rng(0)
    paths = {}
    for h, w in SIZES:
        p = tmp_path / f'rgb_{h}x{w}.jpg'
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        paths[f'rgb {h}x{w}'] = (str(p), (h, w))
    gray = tmp_path / 'gray.png'
    Image.fromarray(rng.integers(0, 255, (45, 61), dtype=np.uint8), 'L').save(gray)
    rgba = tmp_path / 'rgba.png'
    Image.fromarray(rng.integers(0, 255, (37, 52, 4), dtype=np.uint8), 'RGBA').save(rgba)
    paths['grayscale'] = (str(gray), (45, 61))
    paths['rgba'] = (str(rgba), (37, 52))
    return paths


@pytest.fixture
def segmentor():
    """Built per test: it also makes mmseg the default scope again (the
    detector tests switch it to mmdet)."""
    from mmseg.apis import init_model
    return init_model(SEG_CONFIG, device='cpu')


@pytest.fixture(scope='module')
def detector():
    from mmdet.apis import init_detector
    return init_detector(DET_CONFIG, device='cpu')


@pytest.mark.parametrize('resize', [True, False], ids=['demo-pipeline', 'native-size'])
def test_segmentation_any_image(segmentor, tmp_path, resize):
    """With the demo test pipeline, and without its Resize so the backbone sees
    the native 1x1 ... 33x47 sizes."""
    from mmseg.apis import inference_model
    if not resize:
        segmentor.cfg.test_pipeline = [t for t in segmentor.cfg.test_pipeline
                                       if t['type'] not in ('Resize', 'LoadAnnotations')]
    else:
        segmentor.cfg.test_pipeline = [t for t in segmentor.cfg.test_pipeline
                                       if t['type'] != 'LoadAnnotations']
    for name, (path, hw) in write_images(tmp_path).items():
        result = inference_model(segmentor, path)
        assert tuple(result.pred_sem_seg.data.shape[-2:]) == hw, name


@pytest.mark.parametrize('resize', [True, False], ids=['demo-pipeline', 'native-size'])
def test_detection_any_image(detector, tmp_path, resize):
    from mmdet.apis import inference_detector
    from mmengine.registry import DefaultScope
    cfg = detector.cfg
    pipeline = [t for t in cfg.test_dataloader.dataset.pipeline
                if t['type'] != 'LoadAnnotations']
    if not resize:  # mmdet needs a scale factor: resize by 1
        pipeline = [dict(type='Resize', scale_factor=1.0, keep_ratio=True)
                    if t['type'] == 'Resize' else t for t in pipeline]
    # On a copy of the module's detector's config: the other parametrization
    # reads the original, in whatever order they run.
    detector.cfg = copy.deepcopy(cfg)
    detector.cfg.test_dataloader.dataset.pipeline = pipeline
    try:
        for name, (path, hw) in write_images(tmp_path).items():
            # The test pipeline is built in the default scope, which the
            # module's detector fixture set for the first test only.
            with DefaultScope.overwrite_default_scope('mmdet'):
                result = inference_detector(detector, path)
            pred = result.pred_instances
            assert pred.masks.shape[-2:] == hw, name
            assert torch.isfinite(pred.scores).all()
    finally:
        detector.cfg = cfg


def test_unreadable_image_names_the_file(segmentor, tmp_path):
    from mmseg.apis import inference_model
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
    with pytest.raises(Exception, match=r'failed to load image: .*broken\.jpg'):
        inference_model(segmentor, str(bad))


@pytest.mark.slow
def test_images_without_annotations(demo_data, tmp_path):
    """A val image with no objects is evaluated (CocoMetric); training skips
    images without objects (filter_empty_gt) instead of failing."""
    from mmengine.runner import Runner
    # The session's demo data stays as it is (other tests index its images):
    # its images linked into a folder of this test's, which gets the new one.
    root = tmp_path / 'coco'
    (root / 'val2017').mkdir(parents=True)
    for image in (demo_data / 'coco' / 'val2017').iterdir():
        (root / 'val2017' / image.name).symlink_to(image)
    ann = json.loads((demo_data / 'coco' / 'annotations' / 'instances_val2017.json').read_text())
    empty = dict(ann['images'][0], id=999, file_name='empty.jpg')
    Image.new('RGB', (empty['width'], empty['height']), (90, 90, 90)).save(
        root / 'val2017' / 'empty.jpg')
    ann['images'].append(empty)
    (tmp_path / 'val.json').write_text(json.dumps(ann))
    cfg = Config.fromfile(DET_CONFIG)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.test_dataloader.dataset.update(data_root=str(root) + '/',
                                       ann_file=str(tmp_path / 'val.json'))
    cfg.test_evaluator.ann_file = str(tmp_path / 'val.json')
    runner = Runner.from_cfg(cfg)
    assert len(runner.test_dataloader.dataset) == len(ann['images'])
    metrics = runner.test()
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0

    cfg.train_dataloader.dataset.update(data_root=str(root) + '/',
                                        ann_file=str(tmp_path / 'val.json'),
                                        data_prefix=dict(img='val2017/'))
    from mmdet.registry import DATASETS
    train_set = DATASETS.build(cfg.train_dataloader.dataset)
    assert 'empty.jpg' not in [osp.basename(d['img_path']) for d in train_set.data_list]
    assert len(train_set) == len(ann['images']) - 1
