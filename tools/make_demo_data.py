"""Generate the embedded demo data: shapes on textured backgrounds.

Writes, under OUT (default data/demo):

* ``coco/``: an instance-segmentation set in COCO layout
  (``annotations/instances_{train,val}2017.json``, ``{train,val}2017/*.jpg``)
  with three categories (square, disk, triangle), polygon masks and image
  sizes that are not multiples of 32.
* ``ade/``: a semantic set in ADE20K's folder layout
  (``images/{training,validation}/*.jpg``, ``annotations/.../*.png``); label
  values follow ADE20K (0 = unlabelled, reduced away by the dataset), with the
  background as ADE class 1 ('wall') and the shapes as classes 2-4.
* ``imagenet/``: a classification set in ImageNet's layout
  (``{train,val}/*.JPEG`` and ``meta/{train,val}.txt``) of its own images,
  each holding one to three shapes of a single category, its label
  (classes 0-2): the pretraining task of the demo.

Deterministic for a given --seed; rerunning overwrites only these files.
"""
import argparse
import json
import math
import os
import os.path as osp
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CATEGORIES = ('square', 'disk', 'triangle')
# Fixed, distinct colours make the task learnable in a few hundred steps.
COLOURS = ((220, 60, 60), (60, 200, 80), (70, 90, 230))
# Classification images are smaller: the classifier sees 112x112 crops.
CLS_SIDES = (112, 176)


def shape_polygon(kind: str, cx: float, cy: float, r: float,
                  angle: float) -> list[tuple[float, float]]:
    n = {'square': 4, 'disk': 32, 'triangle': 3}[kind]
    return [(cx + r * math.cos(angle + 2 * math.pi * i / n),
             cy + r * math.sin(angle + 2 * math.pi * i / n)) for i in range(n)]


def background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    noise = rng.integers(60, 180, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(noise).resize((w, h), Image.BILINEAR)
    return img.filter(ImageFilter.GaussianBlur(2))


def make_image(rng: np.random.Generator, sides: tuple[int, int] = (150, 260),
               category: Optional[int] = None):
    """An image, its objects (category index, polygon) and a label map.

    Every shape is of ``category`` when given, of a random one otherwise.
    """
    # Sides in [sides[0], sides[1]), never a multiple of 32.
    h, w = (int(v) for v in rng.integers(*sides, size=2))
    h += h % 32 == 0
    w += w % 32 == 0
    img = background(rng, h, w)
    draw = ImageDraw.Draw(img)
    label = Image.new('L', (w, h), 1)
    label_draw = ImageDraw.Draw(label)
    objects = []
    # One object per cell of a 2x2 grid at most, so that masks never overlap.
    for cell in rng.permutation(4)[:rng.integers(1, 5)]:
        cat = int(rng.integers(len(CATEGORIES))) if category is None else category
        cell_h, cell_w = h / 2, w / 2
        r = float(rng.uniform(0.25, 0.42)) * min(cell_h, cell_w)
        cx = (cell % 2) * cell_w + float(rng.uniform(r, cell_w - r))
        cy = (cell // 2) * cell_h + float(rng.uniform(r, cell_h - r))
        poly = shape_polygon(CATEGORIES[cat], cx, cy, r, float(rng.uniform(0, math.pi)))
        draw.polygon(poly, fill=COLOURS[cat])
        label_draw.polygon(poly, fill=cat + 2)
        objects.append((cat, poly))
    return img, objects, label


def polygon_area(poly: list[tuple[float, float]]) -> float:
    xs, ys = np.array(poly).T
    return float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def write_split(rng: np.random.Generator, out: str, split: str, num: int) -> None:
    coco_split = {'train': 'train2017', 'val': 'val2017'}[split]
    ade_split = {'train': 'training', 'val': 'validation'}[split]
    img_dir = osp.join(out, 'coco', coco_split)
    ade_img_dir = osp.join(out, 'ade', 'images', ade_split)
    ade_ann_dir = osp.join(out, 'ade', 'annotations', ade_split)
    for d in (img_dir, ade_img_dir, ade_ann_dir, osp.join(out, 'coco', 'annotations')):
        os.makedirs(d, exist_ok=True)
    in1k_dir = osp.join(out, 'imagenet', split)
    os.makedirs(in1k_dir, exist_ok=True)
    os.makedirs(osp.join(out, 'imagenet', 'meta'), exist_ok=True)
    images, annotations, in1k_list = [], [], []
    for i in range(num):
        img, objects, label = make_image(rng)
        name = f'{split}_{i:04d}'
        img.save(osp.join(img_dir, name + '.jpg'), quality=95)
        img.save(osp.join(ade_img_dir, name + '.jpg'), quality=95)
        label.save(osp.join(ade_ann_dir, name + '.png'))
        category = i % len(CATEGORIES)  # balanced classes
        cls_img, _, _ = make_image(rng, CLS_SIDES, category)
        cls_img.save(osp.join(in1k_dir, name + '.JPEG'), quality=95)
        in1k_list.append(f'{name}.JPEG {category}\n')
        images.append(dict(id=i, file_name=name + '.jpg', width=img.width,
                           height=img.height))
        for cat, poly in objects:
            xs, ys = np.array(poly).T
            x0, y0 = float(xs.min()), float(ys.min())
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i, category_id=cat + 1,
                segmentation=[[round(float(v), 2) for p in poly for v in p]],
                area=polygon_area(poly), iscrowd=0,
                bbox=[round(x0, 2), round(y0, 2), round(float(xs.max()) - x0, 2),
                      round(float(ys.max()) - y0, 2)]))
    with open(osp.join(out, 'imagenet', 'meta', f'{split}.txt'), 'w') as f:
        f.writelines(in1k_list)
    categories = [dict(id=i + 1, name=n, supercategory='shape')
                  for i, n in enumerate(CATEGORIES)]
    with open(osp.join(out, 'coco', 'annotations', f'instances_{coco_split}.json'), 'w') as f:
        json.dump(dict(images=images, annotations=annotations,
                       categories=categories), f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/demo')
    parser.add_argument('--num-train', type=int, default=256)
    parser.add_argument('--num-val', type=int, default=32)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    write_split(rng, args.out, 'train', args.num_train)
    write_split(rng, args.out, 'val', args.num_val)
    print(f'demo data written to {args.out}: {args.num_train} train / '
          f'{args.num_val} val images (coco/, ade/ and imagenet/)')


if __name__ == '__main__':
    main()
