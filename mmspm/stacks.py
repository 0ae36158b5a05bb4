"""The two OpenMMLab stacks mmspm runs on, and the check that one is installed.

Both stacks install the same modules (``mmengine``, ``mmcv``, ``mmdet``,
``mmseg``, ``mmpretrain``) from different distributions: the OpenMMLab
releases (``mmdet`` 3.3, ...) or the maintained OneDL fork
(``onedl-mmdetection`` 3.5, ...). mmspm's ``install_requires`` name neither,
so that installing it never pulls one stack over the other; ``setup.py``
builds the extras ``mmspm[openmmlab]`` and ``mmspm[onedl]`` from
:data:`STACKS`, and :func:`check` (run by ``import mmspm``) says which extra
to install when the installed stack is missing, mixed or out of range.

Standard library only: ``setup.py`` executes this file.
"""
from importlib.metadata import PackageNotFoundError, version

# module -> (distribution, the versions mmspm accepts), per stack. mmseg and
# mmpretrain are optional (mmspm registers its models where they are installed).
STACKS = {
    'openmmlab': {
        'mmengine': ('mmengine', '>=0.10.7,<1.0'),
        'mmcv': ('mmcv', '>=2.0.0,<2.2.0'),  # with its ops; mmdet 3.3 refuses 2.2
        'mmdet': ('mmdet', '>=3.3.0,<3.4.0'),
        'mmseg': ('mmsegmentation', '>=1.2.2,<1.3'),
        'mmpretrain': ('mmpretrain', '>=1.2.0,<1.3'),
    },
    'onedl': {
        'mmengine': ('onedl-mmengine', '>=0.10.12,<1.0'),
        'mmcv': ('onedl-mmcv', '>=2.3.6,<2.4'),
        'mmdet': ('onedl-mmdetection', '>=3.5.1,<3.6'),
        'mmseg': ('onedl-mmsegmentation', '>=1.4.2,<1.5'),
        'mmpretrain': ('onedl-mmpretrain', '>=1.3.6,<1.4'),
    },
}
REQUIRED = ('mmengine', 'mmcv', 'mmdet')


def extras() -> dict[str, list[str]]:
    """``setup.py``'s ``extras_require``.

    Returns:
        dict[str, list[str]]: One extra per stack, all its packages.
    """
    return {stack: [dist + spec for dist, spec in modules.values()]
            for stack, modules in STACKS.items()}


def installed() -> dict[str, tuple[str, str, str]]:
    """The installed modules of :data:`STACKS`.

    They are found by distribution (no module is imported).

    Returns:
        dict[str, tuple[str, str, str]]: module -> (stack, distribution,
        version) for each installed module.
    """
    found = {}
    for stack, modules in STACKS.items():
        for module, (dist, _) in modules.items():
            try:
                found.setdefault(module, (stack, dist, version(dist)))
            except PackageNotFoundError:
                pass
    return found


def problems(found: dict[str, tuple[str, str, str]]) -> list[str]:
    """What is wrong with the stack ``found``.

    A required module missing, modules of both stacks, a version out of range.

    Args:
        found (dict[str, tuple[str, str, str]]): As :func:`installed` gives
            it.

    Returns:
        list[str]: The problems, each with the fix; empty if none.
    """
    fix = ("install one stack: pip install 'mmspm[openmmlab]' (the OpenMMLab "
           "releases) or 'mmspm[onedl]' (the OneDL fork); docs/install.md")
    stacks = sorted({stack for stack, _, _ in found.values()})
    if len(stacks) > 1:
        mixed = ', '.join(f'{dist} {ver}' for _, dist, ver in found.values())
        return [f'mmspm found packages of both stacks ({mixed}): {fix}']
    missing = [m for m in REQUIRED if m not in found]
    if missing:
        return [f'mmspm needs {", ".join(missing)}, not installed: {fix}']
    # Imported here, not at the top: setup.py executes this file, and
    # packaging comes with either stack's mmengine, found above.
    from packaging.specifiers import SpecifierSet
    return [f'mmspm accepts {dist}{STACKS[stack][module][1]} on the {stack} stack, '
            f'found {ver}: {fix}'
            for module, (stack, dist, ver) in found.items()
            if not SpecifierSet(STACKS[stack][module][1]).contains(ver, prereleases=True)]


def check() -> str:
    """The installed stack's name.

    Returns:
        str: The stack's name.

    Raises:
        ImportError: Naming the fix, if the stack has problems.
    """
    found = installed()
    errors = problems(found)
    if errors:
        raise ImportError('\n'.join(errors))
    return found['mmengine'][0]
