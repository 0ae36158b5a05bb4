"""The torch versions mmspm is tested with, for `make install`.

    python requirements/check_torch.py          pip constraints that keep the
                                                environment's torch, torchvision
                                                and numpy (OWN_TORCH=1, TORCH=...)
    python requirements/check_torch.py --pins V what to install for torch V: it,
                                                its torchvision and a numpy its
                                                build runs with (TORCH=V)

Accepted: torch 2.1 to 2.14 (docs/install.md lists the combinations tested).
torch < 2.3 was built against numpy 1.x and fails with numpy 2.
"""
import sys

MIN, MAX = (2, 1), (2, 14)
# torch minor -> the torchvision minor built for it.
TORCHVISION = {1: 16, 2: 17, 3: 18, 4: 19, 5: 20, 6: 21, 7: 22, 8: 23, 9: 24, 10: 25,
               11: 26, 12: 27, 13: 28, 14: 29}


def release(version: str) -> tuple:
    major, minor = version.split('+')[0].split('.')[:2]
    return int(major), int(minor)


def supported(version: str) -> str:
    """An error message for a torch version mmspm does not accept, else ''."""
    if MIN <= release(version) <= MAX:
        return ''
    return (f'torch {version} is not supported: mmspm accepts torch {MIN[0]}.{MIN[1]} to '
            f'{MAX[0]}.{MAX[1]}.')


def pins(version: str) -> list:
    """Requirements that install torch ``version`` with its torchvision and numpy."""
    numpy = 'numpy<2' if release(version) < (2, 3) else 'numpy>=2,<3'
    return [f'torch=={version}', f'torchvision==0.{TORCHVISION[release(version)[1]]}.*', numpy]


def main() -> None:
    if sys.argv[1:2] == ['--pins']:
        version = sys.argv[2]
        if supported(version):
            sys.exit(f'TORCH={version}: {supported(version)}')
        print('\n'.join(pins(version)))
        return
    try:
        import numpy
        import torch
        import torchvision
    except ImportError as e:
        sys.exit(f'OWN_TORCH=1: {sys.executable} has no {e.name}. Install torch '
                 f'{MIN[0]}.{MIN[1]}-{MAX[0]}.{MAX[1]} and its torchvision into that '
                 f'environment (or choose it with PYTHON=/path/to/python), or leave '
                 f'OWN_TORCH out to install the pinned torch.')
    if supported(torch.__version__):
        sys.exit(f'OWN_TORCH=1: {supported(torch.__version__)} Use another environment, or '
                 f'leave OWN_TORCH out to install the pinned torch.')
    print(f'torch=={torch.__version__}\ntorchvision=={torchvision.__version__}\n'
          f'numpy=={numpy.__version__}')


if __name__ == '__main__':
    main()
