"""A trained whole model's weights from its checkpoint, as ``tools/test.py``'s
Runner loads them; for the tools that load one without a Runner
(``mmspm.deployment.load_model``, ``tools/analysis/show_predictions.py``)."""
from types import SimpleNamespace

from torch import nn

from .hooks import ReferenceCheckpointHook
from .safe_load import CheckpointError, load_checkpoint, unwrap


def load_model_weights(model: nn.Module, checkpoint: str) -> None:
    """Load every tensor of ``model`` from ``checkpoint``.

    The file is read without unpickling code (:mod:`mmspm.safe_load`); a
    checkpoint in the SPM authors' layout is placed under the model's SPMPVT
    (and head) as :class:`~mmspm.hooks.ReferenceCheckpointHook` places it for
    the Runner; then every tensor of the model must be in it, and nothing
    else: the predictions, exports and pictures of a partly loaded model
    would mislead.

    Args:
        model (nn.Module): The whole model (classifier, detector, segmentor).
        checkpoint (str): The checkpoint trained with the model's config.

    Raises:
        CheckpointError: If the checkpoint cannot be read safely or does not
            fit the model.
    """
    state = load_checkpoint(checkpoint)
    # The hook reads nothing of the runner but its model.
    ReferenceCheckpointHook().after_load_checkpoint(SimpleNamespace(model=model), state)
    missing, unexpected = model.load_state_dict(unwrap(state), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f'{checkpoint!r} does not fit the model of the config: missing keys '
            f'{missing[:6]}{" ..." if len(missing) > 6 else ""}, unexpected keys '
            f'{unexpected[:6]}{" ..." if len(unexpected) > 6 else ""}. Pass a '
            f'checkpoint trained with this config.')
