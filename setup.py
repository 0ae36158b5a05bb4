"""mmspm: Stepwise Patch Merging for OpenMMLab."""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

MIM_FILES = ('configs', 'tools', 'model-index.yml')


def run_module(name: str) -> dict:
    """The globals of ``mmspm/<name>.py``, executed alone (standard library
    only: mmspm's package imports torch and the stack)."""
    scope: dict = {}
    with open(osp.join('mmspm', f'{name}.py')) as f:
        exec(f.read(), scope)
    return scope


def add_mim_extension() -> None:
    """Put configs, tools and model-index.yml under mmspm/.mim, as mmdet does.

    `mim train/test` look for them there. An editable install links them so
    edits show at once; a normal build copies them into the wheel.
    """
    if 'develop' in sys.argv or any('editable' in a for a in sys.argv):
        mode = 'symlink'
    elif {'sdist', 'bdist_wheel', 'install', 'build'} & set(sys.argv):
        mode = 'copy'
    else:
        return
    root = osp.dirname(osp.abspath(__file__))
    mim_dir = osp.join(root, 'mmspm', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(root, name), osp.join(mim_dir, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmspm',
        version=run_module('version')['__version__'],
        description='Stepwise Patch Merging (SPM) backbones for mmdet, '
        'mmsegmentation and mmpretrain',
        long_description=open('README.md').read() if osp.exists('README.md') else '',
        long_description_content_type='text/markdown',
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        include_package_data=True,
        package_data={'mmspm': ['.mim/configs/**/*', '.mim/tools/**/*',
                                '.mim/model-index.yml']},
        python_requires='>=3.9',
        # Neither stack here: installing mmspm must not pull the OpenMMLab
        # releases over the OneDL fork's (or the reverse). Each stack is an
        # extra (mmspm/stacks.py); `import mmspm` names the extra to install
        # when no stack, or a mix, is found. requirements/ pins the tested sets.
        install_requires=[
            # The oldest tested (docs/install.md): torch 2.1 + mmcv 2.1.0 is what
            # most mmdet 3.x environments hold. Installing mmspm must not
            # replace their torch or numpy (mmcv's ops are built for that torch).
            'torch>=2.1',
            'numpy>=1.24,<3',  # requirements/ installs 2.x; torch < 2.3 needs 1.x
            'safetensors',
        ],
        extras_require={**run_module('stacks')['extras'](), 'tests': ['pytest>=7']},
        license='Apache License 2.0',
        zip_safe=False,
    )
