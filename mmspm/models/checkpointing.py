"""``with_cp`` of every SPM backbone: a module's forward pass recomputed in
the backward pass instead of keeping its activations, with its BatchNorm
statistics updated once, by the first pass (SPM's MSA and guide token
generator hold BatchNorms; the upstream blocks hold none)."""
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any, Callable, Iterator

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint


@contextmanager
def batchnorm_statistics_kept(module: nn.Module) -> Iterator[None]:
    """Restore the running statistics of ``module``'s BatchNorms on exit.

    Recomputing a forward pass in training mode would update them a second
    time.

    Args:
        module (nn.Module): The module whose BatchNorms' statistics are kept.

    Yields:
        None
    """
    bns = [m for m in module.modules()
           if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)]
             for m in bns]
    try:
        yield
    finally:
        for m, values in zip(bns, saved):
            for buffer, value in zip((m.running_mean, m.running_var,
                                      m.num_batches_tracked), values):
                buffer.copy_(value)


def _contexts(module: nn.Module) -> tuple[AbstractContextManager, AbstractContextManager]:
    """``torch.utils.checkpoint``'s ``context_fn``: nothing around the first
    forward pass, the BatchNorm statistics kept around its recomputation."""
    return nullcontext(), batchnorm_statistics_kept(module)


def checkpointed(module: nn.Module, forward: Callable[..., Any], *args: Any) -> Any:
    """``forward(*args)``, recomputed in the backward pass.

    Recomputed by ``torch.utils.checkpoint`` (non-reentrant) with
    ``module``'s BatchNorm statistics updated once.

    Args:
        module (nn.Module): The module whose forward pass ``forward`` is.
        forward (Callable[..., Any]): The forward pass of ``module``.
        *args (Any): Its arguments.

    Returns:
        Any: What ``forward`` returns.
    """
    return checkpoint(forward, *args, use_reentrant=False, context_fn=partial(_contexts, module))
