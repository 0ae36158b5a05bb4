"""Reading checkpoints without running code, for any model.

Checkpoints are untrusted: ``.safetensors`` files are read directly, every
other file with ``torch.load(weights_only=True)`` (torch >= 2.4) or, on older
torch, which cannot extend that allow-list, through a restricted unpickler
(:data:`RESTRICTED_PICKLE`) that allows torch's tensor types and nothing more.
The only non-tensor types allowed are the exact ones mmengine's runner writes
(:data:`MMENGINE_SAFE_GLOBALS`). Names other than local paths (``https://``,
``open-mmlab://``, any scheme registered with mmengine's ``CheckpointLoader``)
go through that loader, whose ``torch.load`` calls are ``weights_only`` by
default in torch >= 2.6; :func:`load_checkpoint` refuses them where that
default has been switched off.
"""
import _compat_pickle
import codecs
import collections
import functools
import importlib
import os
import os.path as osp
import pickle
import types
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Dict

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import load_from_local
from torch import Tensor


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def _history_buffer_statistic(owner: type, name: str) -> Callable:
    """Stands in for ``getattr`` while unpickling, for one use only.

    A HistoryBuffer pickles its statistics methods as
    ``getattr(HistoryBuffer, 'mean')``; allowing the real ``getattr`` would let
    a checkpoint fetch any attribute of any allowed global.
    """
    if owner is HistoryBuffer and (name in ('min', 'max', 'current', 'mean')
                                   or name in HistoryBuffer._statistics_methods):
        return getattr(owner, name)
    raise pickle.UnpicklingError(f'getattr({owner!r}, {name!r}) is not allowed '
                                 f'in a checkpoint')


# numpy's pickled arrays and scalars name their reconstructors by module:
# numpy.core.multiarray under numpy 1, numpy._core.multiarray under numpy 2
# (numpy 1.26 has both modules). Both names are allowed, for the functions of
# the numpy installed, so that checkpoints written under either load.
_multiarray = importlib.import_module(
    'numpy._core.multiarray' if hasattr(np, '_core') else 'numpy.core.multiarray')
_NUMPY_RECONSTRUCTORS = [
    (getattr(_multiarray, name), f'{module}.multiarray.{name}')
    for name in ('_reconstruct', 'scalar') for module in ('numpy.core', 'numpy._core')
]

# What mmengine 0.10.7 runner checkpoints hold besides tensors: HistoryBuffer
# objects (with their statistics methods) and numpy arrays/scalars in
# `message_hub`, numpy scalars in `meta`.
MMENGINE_SAFE_GLOBALS = [
    HistoryBuffer,
    (_history_buffer_statistic, 'builtins.getattr'),
    np.ndarray,
    np.dtype,
    *_NUMPY_RECONSTRUCTORS,
    *{type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')},
]


# torch >= 2.4: weights_only loads take an allow-list of extra types
# (add_safe_globals) and honour TORCH_FORCE_WEIGHTS_ONLY_LOAD. Older torch
# (2.1-2.3, where mmcv 2.1.0's prebuilt wheels are) has neither.
HAS_SAFE_GLOBALS = hasattr(torch.serialization, 'add_safe_globals')


def register_safe_globals() -> None:
    """Allow exactly mmengine's checkpoint types in ``weights_only`` loads.

    mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, which torch
    >= 2.6 defaults to True, so its own checkpoints (``--resume``,
    ``load_from``, ``mim test --checkpoint``) fail to load. Allow-listing the
    types keeps every other pickle refused. Nothing to do on torch < 2.4,
    which has no such list: :data:`RESTRICTED_PICKLE` carries the same types.
    """
    if HAS_SAFE_GLOBALS:
        torch.serialization.add_safe_globals(MMENGINE_SAFE_GLOBALS)


@functools.lru_cache(maxsize=None)
def _allowed_globals() -> Dict[str, Any]:
    """'module.name' -> object: what torch's own weights-only unpickler allows
    (tensors, storages, dtypes, OrderedDict), what newer torch's allows too
    (``_codecs.encode``, how pickle protocol 2, torch.save's, writes bytes
    such as a numpy array's data; ``collections.Counter``, in mmdet's
    checkpoints) and :data:`MMENGINE_SAFE_GLOBALS`, under the names
    add_safe_globals gives them."""
    from torch._weights_only_unpickler import _get_allowed_globals
    allowed = dict(_get_allowed_globals())
    allowed['_codecs.encode'] = codecs.encode
    allowed['collections.Counter'] = collections.Counter
    for entry in MMENGINE_SAFE_GLOBALS:
        obj, name = entry if isinstance(entry, tuple) else (
            entry, f'{entry.__module__}.{entry.__qualname__}')
        allowed[name] = obj
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only the globals of :func:`_allowed_globals`.

    Code runs in unpickling only through globals (a class to build, a function
    to call); refusing every other name refuses every payload.
    """

    def find_class(self, module: str, name: str) -> Any:
        # Pickle protocol 2 (torch.save's) names Python 2's modules
        # (__builtin__.getattr): pickle's own mapping to Python 3's names.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        allowed = _allowed_globals()
        key = f'{module}.{name}'
        if key not in allowed:
            raise pickle.UnpicklingError(f'{key} is not allowed in a checkpoint')
        return allowed[key]


# For torch.load's ``pickle_module``: torch subclasses ``Unpickler`` (its
# storage lookups go through find_class too) and calls ``load`` for the
# legacy format's header.
RESTRICTED_PICKLE = types.SimpleNamespace(
    __name__=__name__ + '.RESTRICTED_PICKLE',
    Unpickler=_RestrictedUnpickler,
    load=lambda file, **kwargs: _RestrictedUnpickler(file, **kwargs).load())


# torch's own, kept: force_weights_only may replace torch.load by restricted_load.
_torch_load = torch.load


def restricted_load(f: Any, map_location: Any = None, **kwargs: Any) -> Any:
    """``torch.load`` through :data:`RESTRICTED_PICKLE`.

    Whatever ``weights_only`` or ``pickle_module`` the caller passes: torch
    < 2.4's equivalent of ``weights_only=True`` with mmengine's types allowed.

    Args:
        f (Any): What ``torch.load`` reads: a path or a file-like object.
        map_location (Any): As ``torch.load``'s. Default: None.
        **kwargs (Any): Other arguments of ``torch.load``; ``weights_only``
            and ``pickle_module`` are ignored.

    Returns:
        Any: What ``torch.load`` returns.
    """
    kwargs.pop('weights_only', None)
    kwargs.pop('pickle_module', None)
    return _torch_load(f, map_location=map_location, pickle_module=RESTRICTED_PICKLE,
                       weights_only=False, **kwargs)


# What torch's weights_only unpickler says when a pickle asks for code.
_REFUSED_MESSAGES = ('Unsupported global', 'unrecognized function',
                     'is not allowed in a checkpoint', 'is blocked')


def _unpickling_detail(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines()]
    return next((line for line in lines if 'WeightsUnpickler error' in line),
                lines[-1] if lines else type(error).__name__)


def _refusal(name: str, error: Exception) -> CheckpointError:
    """The error for a failed unpickling: refused code, or a damaged file."""
    if any(m in str(error) for m in _REFUSED_MESSAGES):
        return CheckpointError(
            f'Checkpoint {name!r} holds pickled objects that are not tensors '
            f'or mmengine checkpoint data, so it was refused (it could run '
            f'code). Save a plain state dict of tensors, or a .safetensors '
            f'file. Detail: {_unpickling_detail(error)}')
    return CheckpointError(f'Checkpoint {name!r} is corrupt or truncated '
                           f'({_unpickling_detail(error)}).')


def load_file(path: str) -> dict:
    """Read a local checkpoint file without running pickled code.

    Args:
        path (str): The local file; ``.safetensors`` files are read directly,
            others with ``torch.load(weights_only=True)`` or
            :func:`restricted_load` on torch < 2.4.

    Returns:
        dict: The checkpoint, on the CPU.

    Raises:
        CheckpointError: If the file does not exist, is corrupt or truncated,
            or holds pickled objects that are not tensors or mmengine
            checkpoint data.
    """
    if not osp.isfile(path):
        raise CheckpointError(
            f'Checkpoint {path!r} does not exist. No SPM weights are published: '
            f'pretrain with configs/imagenet, start from PVT v1 weights '
            f'(from_pvt_v1=True) or from the Swin/PVTv2 releases (README.md, '
            f'section "Weights").')
    if path.endswith('.safetensors'):
        from safetensors import SafetensorError
        from safetensors.torch import load_file as load_safetensors
        try:
            return load_safetensors(path, device='cpu')
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f'Checkpoint {path!r} is not a readable '
                                  f'safetensors file ({e}).') from e
    try:
        # Not torch's safe_globals() context: on exit it removes the types
        # again, also for everyone who registered them before.
        if not HAS_SAFE_GLOBALS:
            return restricted_load(path, map_location='cpu')
        register_safe_globals()
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(path, e) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f'Checkpoint {path!r} is corrupt or truncated '
                              f'({type(e).__name__}: {e}).') from e


def is_local(filename: str) -> bool:
    """Whether mmengine's CheckpointLoader would read ``filename`` as a local file.

    Args:
        filename (str): A path, URL or other name of a checkpoint.

    Returns:
        bool: True for a local file.
    """
    return CheckpointLoader._get_checkpoint_loader(filename) is load_from_local


# What torch reads as "set" in its TORCH_FORCE_*_WEIGHTS_ONLY_LOAD variables.
_TRUE = ('1', 'y', 'yes', 'true')


def _weights_only_by_default() -> bool:
    """Whether a ``torch.load`` without ``weights_only`` (mmengine's) is safe."""
    return (os.getenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0').lower() in _TRUE
            or os.getenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '0').lower() not in _TRUE)


def force_weights_only() -> None:
    """Make every ``torch.load`` of this process ``weights_only``.

    Every ``torch.load`` of this process, and of the processes it starts,
    becomes ``weights_only``, whatever its caller passes.

    For the train/test tools, whose checkpoints (``load_from``, ``--resume``,
    ``--checkpoint``) mmengine reads: the OneDL fork's mmengine retries a
    refused ``weights_only`` load with ``weights_only=False``, which would
    run a pickled payload. torch honours ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``
    over the argument; mmengine's own types stay allowed
    (:func:`register_safe_globals`). On torch < 2.4 the variable would make
    torch refuse mmengine's own checkpoints (its allow-list cannot be
    extended there), so ``torch.load`` itself becomes :func:`restricted_load`
    for this process instead; the tools' worker processes (torchrun's) force
    their own.

    Raises:
        SystemExit: If ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set.
    """
    if os.getenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '0').lower() in _TRUE:
        raise SystemExit('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set: mmspm\'s tools load '
                         'checkpoints weights-only (a pickled checkpoint could run '
                         'code). Unset it.')
    _force_restricted_loads()


def _force_restricted_loads() -> None:
    if HAS_SAFE_GLOBALS:
        os.environ['TORCH_FORCE_WEIGHTS_ONLY_LOAD'] = '1'
    else:
        torch.load = restricted_load


def load_checkpoint(filename: str) -> dict:
    """Read a checkpoint from anything mmengine's CheckpointLoader accepts.

    Local files go through :func:`load_file`; URLs and other schemes through
    the loader registered for them, on the CPU, with every ``torch.load``
    forced to ``weights_only=True``; refused while
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set.

    Args:
        filename (str): A local path, a URL or a name of any scheme
            registered with mmengine's ``CheckpointLoader``.

    Returns:
        dict: The checkpoint, on the CPU.

    Raises:
        CheckpointError: If the checkpoint cannot be read or is refused.
    """
    if is_local(filename):
        return load_file(filename)
    if not _weights_only_by_default():
        raise CheckpointError(
            f'Refusing to load {filename!r}: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD '
            f'is set, so torch.load would unpickle whatever the file holds (it '
            f'could run code). Unset it, or download the file and give its '
            f'local path.')
    register_safe_globals()
    # Forced for the call: the OneDL fork's loaders retry a refused
    # weights-only load with weights_only=False (on torch < 2.4 the loads go
    # through restricted_load for the call instead: force_weights_only).
    forced = os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD')
    torch_load = torch.load
    _force_restricted_loads()
    try:
        return CheckpointLoader.load_checkpoint(filename, map_location='cpu')
    except pickle.UnpicklingError as e:
        raise _refusal(filename, e) from e
    finally:
        torch.load = torch_load
        if forced is None:
            os.environ.pop('TORCH_FORCE_WEIGHTS_ONLY_LOAD', None)
        else:
            os.environ['TORCH_FORCE_WEIGHTS_ONLY_LOAD'] = forced


def state_dict_of(checkpoint: dict) -> dict:
    """The state dict inside a checkpoint.

    It is under ``state_dict`` (mmengine), under ``model`` (the PVT and SPM
    authors' checkpoints) or at the top level.

    Args:
        checkpoint (dict): The checkpoint.

    Returns:
        dict: The state dict.
    """
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def unwrap(checkpoint: dict) -> 'OrderedDict[str, Tensor]':
    """The state dict inside a checkpoint, tensors only, DDP prefix removed.

    Args:
        checkpoint (dict): The checkpoint; its state dict is found by
            :func:`state_dict_of`.

    Returns:
        OrderedDict[str, Tensor]: The state dict without the ``module.``
        prefix.

    Raises:
        CheckpointError: If ``checkpoint`` is not a dict or an entry of its
            state dict is not a tensor.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'Expected a checkpoint dict, got '
                              f'{type(checkpoint).__name__}.')
    state = OrderedDict()
    for k, v in state_dict_of(checkpoint).items():
        if not isinstance(v, Tensor):
            raise CheckpointError(f'Checkpoint entry {k!r} is a '
                                  f'{type(v).__name__}, not a tensor: this is '
                                  f'not a state dict.')
        state[k[len('module.'):] if k.startswith('module.') else k] = v
    return state


def backbone_of(state: 'OrderedDict[str, Tensor]') -> 'OrderedDict[str, Tensor]':
    """The ``backbone.*`` entries of a whole-model state dict, prefix removed.

    A whole-model state dict is a detector's, segmentor's or classifier's; a
    state dict without such keys is the backbone's own and is returned as it
    is.

    Args:
        state (OrderedDict[str, Tensor]): The state dict.

    Returns:
        OrderedDict[str, Tensor]: The backbone's state dict.
    """
    if not any(k.startswith('backbone.') for k in state):
        return state
    return with_prefix(state, 'backbone', 'the whole-model state dict')


def with_prefix(state: 'OrderedDict[str, Tensor]', prefix: str,
                filename: str) -> 'OrderedDict[str, Tensor]':
    """The entries of ``state`` under ``prefix``, prefix removed.

    Args:
        state (OrderedDict[str, Tensor]): The state dict.
        prefix (str): The prefix; a trailing dot is added as mmengine's
            ``PretrainedInit`` adds it.
        filename (str): The checkpoint's name, used in the error message.

    Returns:
        OrderedDict[str, Tensor]: The entries under ``prefix``.

    Raises:
        CheckpointError: If ``state`` has no tensors under ``prefix``.
    """
    prefix = prefix if prefix.endswith('.') else prefix + '.'
    sub = OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
    if not sub:
        raise CheckpointError(f'{filename!r} has no tensors under the prefix {prefix!r} of '
                              f'init_cfg; its keys start with '
                              f'{sorted({k.split(".")[0] + "." for k in state})[:8]}.')
    return sub


def check_shapes(own: dict, state: dict, prefix: str = '') -> None:
    """Check that checkpoint tensors have the model's shapes.

    Every checkpoint tensor under ``prefix`` that the model has must have the
    model's shape.

    Args:
        own (dict): The model's state dict.
        state (dict): The checkpoint's state dict.
        prefix (str): The prefix of the model's keys in ``state``.
            Default: ''.

    Raises:
        CheckpointError: If a tensor's shape differs from the model's.
    """
    for k, v in state.items():
        if k.startswith(prefix) and k[len(prefix):] in own:
            shape = own[k[len(prefix):]].shape
            if v.shape != shape:
                raise CheckpointError(
                    f'Checkpoint tensor {k!r} has shape {tuple(v.shape)} but '
                    f'the model expects {tuple(shape)}: the checkpoint is of '
                    f'another architecture or size (check the model\'s '
                    f'arguments, e.g. `arch`).')
