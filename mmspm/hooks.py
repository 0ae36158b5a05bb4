"""Training hooks."""
from collections import OrderedDict

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from .models.spm_pvt import SPMPVT, detect_layout, is_pvt_v1, split_checkpoint
from .safe_load import CheckpointError, state_dict_of


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


@HOOKS.register_module()
class ReferenceCheckpointHook(Hook):
    """Lets ``load_from``, ``--resume`` and ``mim test --checkpoint`` take the
    SPM-PVT authors' checkpoints (their key layout: ``patch_embed2.spm.*``,
    ``block1.*``, ``head.*``, nested under ``model``).

    The runner calls it between reading a checkpoint and loading it into the
    model: it renames such a state dict to the model's keys, the backbone's
    under the SPMPVT module's name and ``head.*`` as ``head.fc.*`` where the
    model has a classifier head. Other checkpoints pass unchanged.
    """

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = state_dict_of(checkpoint)
        if detect_layout(state) != 'reference':
            return
        if is_pvt_v1(state):
            raise CheckpointError(
                'load_from/--checkpoint got a PVT v1 checkpoint: its stage 2-4 '
                'patch embeddings are convolutions where SPM-PVT has SPM layers, '
                'which would stay untrained. Start from it through the '
                'backbone instead: init_cfg=dict(type=\'Pretrained\', '
                'checkpoint=..., from_pvt_v1=True).')
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        names = [n for n, m in model.named_modules() if isinstance(m, SPMPVT)]
        if len(names) != 1 or not names[0]:
            raise CheckpointError(
                f'A reference-layout SPM-PVT checkpoint needs a model holding '
                f'exactly one SPMPVT below its top level; this '
                f'{type(model).__name__} holds {len(names)}.')
        backbone, head, _ = split_checkpoint(state)
        placed = OrderedDict((f'{names[0]}.{k}', v) for k, v in backbone.items())
        if hasattr(getattr(model, 'head', None), 'fc'):
            placed.update((f'head.{k}', v) for k, v in head.items())
        checkpoint.clear()
        checkpoint['state_dict'] = placed
        print_log(f'ReferenceCheckpointHook: reference-layout SPM-PVT '
                  f'checkpoint placed under {names[0]}.', logger='current')
