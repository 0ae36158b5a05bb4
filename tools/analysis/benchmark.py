"""Speed and peak memory: mmspm's SPM vs the naive reference SPM vs PVT.

Every row is timed in this run and reported as a ratio against its baseline
measured in the same run. Each variant runs in a fresh subprocess; its peak
memory is the rise above what the process held once the model and inputs were
built, read from a high-water mark reset just before the first step (the
kernel's peak RSS on CPU, the CUDA allocator's peak on a GPU).

Usage:
    python tools/analysis/benchmark.py [--device cpu|cuda]
        [--sections spm backbone plugins ablations model deploy]
        [--repeat N] [--threads T]

Sections:
  spm       StepwisePatchMerging forward+backward at SPM-PVT-T's three SPM
            layers for a batch of 2 800x1344 detection inputs (64 -> 128 at
            200x336, 128 -> 320 at 100x168, 320 -> 512 at 50x84), mmspm vs
            naive, both given channels-last input as inside the backbone.
  backbone  Backbone forward+backward at 224x224, 512x512 and 800x1344 (the
            padded 800x1333 detection input, batch 2 as in the spm rows):
            SPM-PVT-T (mmspm), SPM-PVT-T with the naive SPM layers, mmdet's
            PVT-T.
  plugins   Backbone forward+backward at 2x3x512x512: each plugin family of
            mmspm.models.families (mmdet's Swin-T and PVTv2-B1), and the
            same with SPM (SPMSwinTransformer, SPMPVTv2).
  ablations Backbone forward+backward at 8x3x224x224: PVT-T, SPM-PVT-T and
            each variant of configs/imagenet/ablations (its SPMPVT options).
  model     One training step (loss + backward) of Mask R-CNN at 800x1333 and
            Semantic FPN at 512x512, SPM-PVT-T vs PVT-T.
  deploy    Inference (batch 1) in PyTorch eager vs onnxruntime's CPU provider
            of the graph tools/deployment/pytorch2onnx.py writes (exported
            first, not timed): the SPM-PVT-T classifier at 224x224, Semantic
            FPN at 512x512 (logits resized to the input), Mask R-CNN at
            800x1333 (boxes, scores, labels, 28x28 masks; both sides run
            mmspm.deployment's wrappers, the same function).
"""
import argparse
import functools
import gc
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

SECTIONS = ('spm', 'backbone', 'plugins', 'ablations', 'model', 'deploy')


@functools.lru_cache
def backbones() -> tuple[dict, list, list]:
    """(dense backbone configs by kind, (title, kind) of each plugin family,
    the ablation kinds). Kinds: 'pvt' (PVT-T), 'spm-pvt' (SPM-PVT-T), each
    plugin family's compared member and its SPM version ('swin', 'spm-swin',
    ...), and the variants of configs/imagenet/ablations, named as their
    configs ('spm-pvt-t-gle-conv', ...). Read when a case needs them: the
    workers of the other cases neither parse those configs nor import
    mmdet's models for them."""
    from mmengine.config import Config

    from mmspm.analysis import backbone_token, display_name
    from mmspm.models.families import FAMILIES
    from mmspm.models.spm_variants import VARIANT_ARGS
    kinds = {
        'pvt': dict(type='PyramidVisionTransformer', num_layers=[2, 2, 2, 2]),
        'spm-pvt': dict(type='SPMPVT', arch='tiny'),
    }
    plugins = []
    for family in (f for f in FAMILIES if f.is_plugin):
        kinds[family.token] = dict(type=family.baselines[0], **family.compared)
        kinds[f'spm-{family.token}'] = dict(type=family.spm.__name__, **family.compared)
        plugins.append((display_name(backbone_token(kinds[family.token])), family.token))
    ablations = []
    for path in sorted(glob.glob(osp.join(ROOT, 'configs/imagenet/ablations/*.py'))):
        options = Config.fromfile(path).model.backbone
        kind = osp.basename(path).split('_')[0]
        kinds[kind] = dict(type='SPMPVT', arch='tiny',
                           **{k: options[k] for k in VARIANT_ARGS if k in options})
        ablations.append(kind)
    return kinds, plugins, ablations


def cases(section: str) -> list[tuple[str, ...]]:
    """(title, baseline variant, other variants...) of each group of ``section``."""
    if section == 'spm':
        return [(f'SPM {c}->{o}, 2x{c}x{h}x{w}', f'spm-naive:{c}:{o}:{h}:{w}',
                 f'spm-mmspm:{c}:{o}:{h}:{w}')
                for c, o, h, w in ((64, 128, 200, 336), (128, 320, 100, 168),
                                   (320, 512, 50, 84))]
    if section == 'backbone':
        return [(f'backbone {h}x{w}, batch {b}', f'pvt:{b}:{h}:{w}',
                 f'spm-pvt-naive:{b}:{h}:{w}', f'spm-pvt:{b}:{h}:{w}')
                for b, h, w in ((8, 224, 224), (2, 512, 512), (2, 800, 1344))]
    if section == 'plugins':
        return [(f'{name} backbone 512x512, batch 2', f'{kind}:2:512:512',
                 f'spm-{kind}:2:512:512') for name, kind in backbones()[1]]
    if section == 'ablations':
        return [('SPM-PVT-T ablations, backbone 224x224, batch 8', 'pvt:8:224:224',
                 'spm-pvt:8:224:224', *[f'{kind}:8:224:224' for kind in backbones()[2]])]
    if section == 'model':
        return [('Mask R-CNN 800x1333, batch 1', 'det:pvt', 'det:spm-pvt'),
                ('Semantic FPN 512x512, batch 2', 'seg:pvt', 'seg:spm-pvt')]
    return [(f'{title} inference {h}x{w}, batch 1', f'deploy:pytorch:{task}:{h}:{w}',
             f'deploy:onnxruntime:{task}:{h}:{w}')
            for title, task, h, w in (('SPM-PVT-T classifier', 'cls', 224, 224),
                                      ('Semantic FPN', 'seg', 512, 512),
                                      ('Mask R-CNN', 'det', 800, 1333))]


def _rss_mb(field: str) -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f'{field} not in /proc/self/status: peak memory needs Linux.')


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs sets the process's VmHWM back to its VmRSS
    # (Linux >= 4.0), so the peak read later is the step's, not the imports'.
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def build_case(name: str, device: str):
    """(step function, description) for one measured variant."""
    import torch
    import mmspm  # noqa: F401  (registers SPMPVT)
    torch.manual_seed(0)
    kind, *args = name.split(':')
    if kind in ('spm-naive', 'spm-mmspm'):
        from mmspm.models import StepwisePatchMerging
        from mmspm.testing import RefSPM
        c, o, h, w = (int(a) for a in args)
        layer = (RefSPM if kind == 'spm-naive' else StepwisePatchMerging)(c, o)
        layer.to(device).train()
        # What the backbone hands either layer: its tokens as channels-last maps.
        x = torch.randn(2, c, h, w, device=device).contiguous(
            memory_format=torch.channels_last)

        # The gradient the backbone hands back: a dense channels-last map (a
        # sum's expanded zero-stride gradient would take other kernels).
        grad = torch.randn_like(layer(x)).contiguous(memory_format=torch.channels_last)

        def step():
            inp = x.detach().requires_grad_()
            layer(inp).backward(grad)
        return step

    if kind in ('det', 'seg'):
        return _model_step(kind, args[0], device)
    if kind == 'deploy':
        return _deploy_step(args[0], args[1], int(args[2]), int(args[3]), device)
    if kind == 'spm-pvt-naive' or kind in backbones()[0]:
        b, h, w = (int(a) for a in args)
        backbone = _backbone(kind, device)
        x = torch.randn(b, 3, h, w, device=device)

        def step():
            sum(o.float().mean() for o in backbone(x)).backward()
        return step
    raise ValueError(name)


def _backbone(kind: str, device: str):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import mmspm  # noqa: F401  (registers SPMPVT)
    from mmspm.testing import use_naive_spm
    init_default_scope('mmdet')
    # spm-pvt-naive: SPM-PVT-T with the naive SPM layers, same weights.
    model = MODELS.build(backbones()[0][kind.replace('-naive', '')])
    if kind == 'spm-pvt-naive':
        use_naive_spm(model)
    model.to(device).train()  # not chained: mmdet's SwinTransformer.train() returns None
    return model


def _model_step(kind: str, backbone: str, device: str):
    import torch
    from mmengine.config import Config

    from mmspm.builder import build_model
    config = dict(
        det=f'configs/mask_rcnn/mask-rcnn_{backbone}-t_fpn_1x_coco.py',
        seg=f'configs/semantic_fpn/fpn_{backbone}-t_8xb2-40k_ade20k-512x512.py')[kind]
    model = build_model(Config.fromfile(osp.join(ROOT, config))).to(device).train()
    if kind == 'det':
        from mmdet.testing import demo_mm_inputs
        packed = demo_mm_inputs(1, [[3, 800, 1333]], num_items=[8], with_mask=True)
    else:
        from mmseg.structures import SegDataSample
        from mmengine.structures import PixelData
        samples = []
        for _ in range(2):
            s = SegDataSample()
            s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 512, 512)))
            s.set_metainfo(dict(img_shape=(512, 512), ori_shape=(512, 512),
                                pad_shape=(512, 512)))
            samples.append(s)
        packed = dict(inputs=[torch.randint(0, 256, (3, 512, 512), dtype=torch.uint8)
                              for _ in range(2)], data_samples=samples)
    data = model.data_preprocessor(packed, True)

    def step():
        losses = model(**data, mode='loss')
        model.parse_losses(losses)[0].backward()
    return step


DEPLOY_CONFIGS = dict(cls='configs/imagenet/spm-pvt-t_8xb128_in1k.py',
                      seg='configs/semantic_fpn/fpn_spm-pvt-t_8xb2-40k_ade20k-512x512.py',
                      det='configs/mask_rcnn/mask-rcnn_spm-pvt-t_fpn_1x_coco.py')


def _deploy_step(runtime: str, task: str, h: int, w: int, device: str):
    """Inference of the exported function on a 1x3xhxw input: in PyTorch
    (eager, the wrapper torch.export captures) or in onnxruntime (the graph,
    exported at a small size into a temporary file: it takes any size)."""
    import tempfile

    import torch
    from mmengine.config import Config

    from mmspm.deployment import DetectorWrapper, ExportWrapper, export_onnx, load_model
    if device != 'cpu':
        raise SystemExit('--sections deploy measures onnxruntime on the CPU: use --device cpu.')
    model = load_model(Config.fromfile(osp.join(ROOT, DEPLOY_CONFIGS[task])))
    x = torch.randn(1, 3, h, w)
    if runtime == 'pytorch':
        wrapper = (DetectorWrapper(model) if task == 'det' else ExportWrapper(model)).eval()

        def step():
            with torch.no_grad():
                wrapper(x)
        return step
    import onnxruntime
    path = osp.join(tempfile.mkdtemp(), f'{task}.onnx')
    export_onnx(model, path, (128, 160))
    options = onnxruntime.SessionOptions()
    threads = int(os.environ.get('OMP_NUM_THREADS', 0))
    options.intra_op_num_threads = threads  # 0: onnxruntime's default, the cores
    session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    feed = {'input': x.numpy()}
    return lambda: session.run(None, feed)


def worker(name: str, device: str, repeat: int) -> dict:
    import torch
    step = build_case(name, device)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    gc.collect()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_peak_rss()
        base = _rss_mb('VmRSS')
    step()  # warm-up; its peak is the peak of a step
    sync()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == 'cuda' \
        else _rss_mb('VmHWM') - base
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return dict(time=statistics.median(times), min=min(times), max=max(times),
                peak_mb=peak)


def measure(name: str, args) -> dict:
    cmd = [sys.executable, __file__, '--worker', name, '--device', args.device,
           '--repeat', str(args.repeat)]
    env = dict(os.environ)
    if args.threads:
        env['OMP_NUM_THREADS'] = str(args.threads)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f'{name} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def label(variant: str) -> str:
    """'spm-pvt:2:512:512' -> 'spm-pvt'; 'det:pvt' -> 'pvt';
    'deploy:onnxruntime:cls:224:224' -> 'onnxruntime'."""
    kind, *args = variant.split(':')
    return args[0] if kind in ('det', 'seg', 'deploy') else kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--sections', nargs='+', default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--threads', type=int, default=0)
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, args.repeat)))
        return
    import torch
    machine = (torch.cuda.get_device_name() if args.device == 'cuda' else
               f'CPU, {os.cpu_count()} cores, torch {torch.__version__}')
    print(f'device: {machine}; {args.repeat} steps after a warm-up; speed-ups are '
          f'of medians, against the first row of each group, measured in this run\n')
    print('| case | variant | median time per step (s) | min-max (s) | speed-up '
          '| peak memory (MiB) | memory ratio |')
    print('|---|---|---|---|---|---|---|')
    for section in args.sections:
        for title, baseline, *others in cases(section):
            base = measure(baseline, args)
            for variant in (baseline, *others):
                r = base if variant == baseline else measure(variant, args)
                print(f'| {title} | {label(variant)} | {r["time"]:.3f} | '
                      f'{r["min"]:.3f}-{r["max"]:.3f} | '
                      f'{base["time"] / r["time"]:.2f}x | {r["peak_mb"]:.0f} | '
                      f'{r["peak_mb"] / max(base["peak_mb"], 1e-9):.2f} |', flush=True)


if __name__ == '__main__':
    main()
