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
    """Restores the running statistics of ``module``'s BatchNorms on exit:
    recomputing a forward pass in training mode would update them a second
    time."""
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
    """``forward(*args)``, the forward pass of ``module``, recomputed in the
    backward pass (``torch.utils.checkpoint``, non-reentrant) with
    ``module``'s BatchNorm statistics updated once."""
    return checkpoint(forward, *args, use_reentrant=False, context_fn=partial(_contexts, module))
