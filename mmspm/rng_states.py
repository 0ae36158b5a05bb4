"""One process's random generator states: capturing them and setting them back.

The generators are torch's (CPU, and the current CUDA device's where CUDA is
available), numpy's global one and Python's ``random``. The states hold
tensors, tuples and numbers only, so a checkpoint holding them still loads
with ``torch.load(weights_only=True)``. When to capture and restore them is
:class:`mmspm.hooks.RNGStateHook`'s business.
"""
import random
from typing import Any, Dict

import numpy as np
import torch

# Keys: 'torch', 'random', 'numpy', and 'cuda' where CUDA was available.
RNGStates = Dict[str, Any]


def capture_rng_states() -> RNGStates:
    """The states of this process's random generators.

    Returns:
        dict: ``torch`` (torch's CPU generator, a uint8 tensor), ``random``
        (``random.getstate()``), ``numpy`` (numpy's global MT19937 as
        ``(keys, pos, has_gauss, cached_gaussian)``, the keys an int64
        tensor, since numpy arrays are not allowed in ``weights_only``
        checkpoints) and, where CUDA is available, ``cuda`` (the current
        device's generator).
    """
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    states = dict(torch=torch.get_rng_state(), random=random.getstate(),
                  numpy=(torch.from_numpy(keys.astype(np.int64)), int(pos),
                         int(has_gauss), float(gauss)))
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state()
    return states


def restore_torch_rng_states(states: RNGStates) -> None:
    """Set torch's generators back to captured states.

    Args:
        states (dict): States from :func:`capture_rng_states`. Their ``cuda``
            state is set only where CUDA is available now, and CUDA's
            generator is left as it is where they have none.
    """
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states['cuda'])


def restore_numpy_and_python_rng_states(states: RNGStates) -> None:
    """Set numpy's global generator and Python's ``random`` back to captured states.

    Separate from :func:`restore_torch_rng_states` because a resumed run may
    need them back at another moment (the data pipeline draws from these).

    Args:
        states (dict): States from :func:`capture_rng_states`.
    """
    keys, pos, has_gauss, gauss = states['numpy']
    np.random.set_state(('MT19937', keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states['random'])
