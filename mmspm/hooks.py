"""Training hooks."""
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves torch's random generator states in checkpoints and restores them
    on ``--resume``, so a resumed run draws the same dropout and stochastic-
    depth masks as an uninterrupted one.

    mmengine reseeds on resume and replays the data pipeline (which uses
    numpy's and Python's generators) to skip the batches already seen, but
    torch's generator would restart from the seed. Nothing between loading
    the checkpoint and the first resumed iteration draws from it.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = {'torch': torch.get_rng_state()}
        if torch.cuda.is_available():
            state['cuda'] = torch.cuda.get_rng_state()
        checkpoint.setdefault('meta', {})['torch_rng_state'] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get('torch_rng_state')
        if state is None:
            return
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state['cuda'])
