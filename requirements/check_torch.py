"""`make install OWN_TORCH=1`: check the environment's torch/torchvision and
print pip constraints that keep them (so no later install replaces them).

Accepted: torch 2.4 to 2.13 with the torchvision built for it. mmspm needs
torch >= 2.4 (``weights_only`` loading with an allow-list of mmengine's
types); 2.13 is the newest version tested.
"""
import sys

MIN, MAX = (2, 4), (2, 13)


def release(version: str) -> tuple[int, int]:
    major, minor = version.split('+')[0].split('.')[:2]
    return int(major), int(minor)


def main() -> None:
    try:
        import torch
        import torchvision
    except ImportError as e:
        sys.exit(f'OWN_TORCH=1: {sys.executable} has no {e.name}. Install torch '
                 f'{MIN[0]}.{MIN[1]}-{MAX[0]}.{MAX[1]} and its torchvision into that '
                 f'environment (or choose it with PYTHON=/path/to/python), or leave '
                 f'OWN_TORCH out to install the pinned torch.')
    found = release(torch.__version__)
    if not MIN <= found <= MAX:
        sys.exit(f'OWN_TORCH=1: torch {torch.__version__} is not supported: mmspm '
                 f'accepts torch {MIN[0]}.{MIN[1]} to {MAX[0]}.{MAX[1]}. Use another '
                 f'environment, or leave OWN_TORCH out to install the pinned torch.')
    print(f'torch=={torch.__version__}\ntorchvision=={torchvision.__version__}')


if __name__ == '__main__':
    main()
