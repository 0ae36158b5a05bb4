"""Training hooks."""
import logging
from collections import OrderedDict
from typing import Optional

from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from .models.spm_pvt import SPMPVT
from .models.spm_pvt_checkpoints import detect_layout, is_pvt_v1, split_checkpoint
from .rng_states import (RNGStates, capture_rng_states, restore_numpy_and_python_rng_states,
                         restore_torch_rng_states)
from .safe_load import CheckpointError, state_dict_of


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save every process's random generator states and restore them on resume.

    The states are saved in checkpoints and each process gets its own back on
    ``--resume``, so a resumed run makes the same random draws (dropout and
    stochastic-depth masks, RoI sampling, data augmentation) as an
    uninterrupted one. Capturing and setting them is
    :mod:`mmspm.rng_states`'s; this hook decides when.

    mmengine reseeds every generator on resume. Nothing between loading the
    checkpoint and the first resumed iteration draws from torch's, so those
    are restored at once. The data pipeline draws from numpy's and Python's:
    mmengine's iteration-based loop replays the batches already seen, which
    brings them back by itself, but an epoch-based one does not, nor does the
    OneDL fork's iteration-based loop (it skips them in the sampler), so for
    those they are restored before the first epoch (the iteration-based
    loop's one); that loop also makes its data loader iterator, which draws
    from torch's generator, at the first resumed batch, so torch's states
    are set again after it. Pipelines in worker processes draw from the
    workers' own generators, which mmengine seeds when it starts them; they
    resume exactly when the workers are not persistent (restarted, and so
    reseeded, every epoch anyway).

    The processes' states differ (``randomness.diff_rank_seed``, or images of
    other sizes drawing other numbers of dropout values), but mmengine saves
    checkpoints from rank 0 alone. So with several processes every process
    sends its states to the others (one collective of a few kilobytes) just
    before a checkpoint can be written: after a training iteration at which a
    ``CheckpointHook`` (priority ``VERY_LOW``, so after this hook) saves, at
    the end of every epoch, and before validation when a ``CheckpointHook``
    keeps the best checkpoint. A checkpoint written at any other time (by
    another hook) holds the states of the last gathering, and the log says so.
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self._gathered: Optional[list[RNGStates]] = None
        self._gathered_at: Optional[int] = None
        self._training = False
        self._pipeline_states: Optional[RNGStates] = None
        self._late_torch_states: Optional[RNGStates] = None

    @staticmethod
    def _checkpoint_hooks(runner) -> list[CheckpointHook]:
        return [h for h in runner.hooks if isinstance(h, CheckpointHook)]

    @classmethod
    def _checkpoint_saves_after_this_iter(cls, runner) -> bool:
        # CheckpointHook.after_train_iter's condition, restated: that method
        # decides and saves in one step and offers no predicate to ask, so
        # only the parts it calls (every_n_train_iters, is_last_train_iter)
        # are asked of each CheckpointHook itself.
        return any(not h.by_epoch and (
                       h.every_n_train_iters(runner, h.interval, h.save_begin)
                       or (h.save_last and h.is_last_train_iter(runner)))
                   for h in cls._checkpoint_hooks(runner))

    @staticmethod
    def _replays_seen_batches(loop) -> bool:
        """Whether the resumed ``loop`` loads the batches it skips: mmengine
        0.10.7's iteration-based loop does; the OneDL fork's skips them in the
        sampler (its loader iterator has ``skip_iter``), without loading."""
        return (isinstance(loop, IterBasedTrainLoop)
                and not hasattr(loop.dataloader_iterator, 'skip_iter'))

    @staticmethod
    def _makes_loader_iterator_at_first_batch(loop) -> bool:
        """Whether the resumed ``loop`` makes its data loader iterator only at
        the first resumed batch, after ``before_train_epoch``: the OneDL
        fork's iteration-based loop (the one that skips seen batches in its
        sampler) does."""
        return (isinstance(loop, IterBasedTrainLoop)
                and hasattr(loop.dataloader_iterator, 'skip_iter'))

    def _gather(self, runner) -> None:
        # Every process reaches the same decision (same hooks, same counters),
        # so all of them join the collective or none does.
        if get_world_size() > 1:
            self._gathered = all_gather_object(capture_rng_states())
            self._gathered_at = runner.iter

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if self._checkpoint_saves_after_this_iter(runner):
            self._gather(runner)

    def after_train_epoch(self, runner) -> None:
        # At every epoch's end, not only where CheckpointHook.after_train_epoch
        # saves: a checkpoint that another hook writes then gets fresh states
        # too, and one collective per epoch costs little.
        self._gather(runner)

    def before_train(self, runner) -> None:
        self._training = True

    def after_train(self, runner) -> None:
        self._training = False

    def before_val_epoch(self, runner) -> None:
        # Only while training: `runner.val()` alone saves no checkpoint.
        if self._training and any(h.save_best for h in self._checkpoint_hooks(runner)):
            self._gather(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if get_world_size() == 1:
            states = [capture_rng_states()]
        elif self._gathered_at == runner.iter:
            states = self._gathered
        else:
            states = self._gathered or [capture_rng_states()]
            since = (f'gathered at iteration {self._gathered_at}'
                     if self._gathered else 'of process 0 alone')
            print_log(f'RNGStateHook: this checkpoint, written at iteration '
                      f'{runner.iter} where no checkpoint was expected, holds the '
                      f'random generator states {since}: a run resumed from it '
                      f'draws differently from an uninterrupted one.',
                      logger='current', level=logging.WARNING)
        checkpoint.setdefault('meta', {})['rng_states'] = states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get('meta', {}).get('rng_states')
        if not saved:
            return
        rank, world_size = get_rank(), get_world_size()
        if len(saved) != world_size:
            print_log(f'RNGStateHook: the checkpoint holds the random generator '
                      f'states of {len(saved)} processes, this run has '
                      f'{world_size}: process r takes those of process '
                      f'r % {len(saved)}, so random draws will differ from an '
                      f'uninterrupted run.', logger='current', level=logging.WARNING)
        states = saved[rank % len(saved)]
        restore_torch_rng_states(states)
        self._pipeline_states = states

    def before_train_epoch(self, runner) -> None:
        loop = runner.train_loop
        if self._pipeline_states is None or self._replays_seen_batches(loop):
            return
        restore_numpy_and_python_rng_states(self._pipeline_states)
        if self._makes_loader_iterator_at_first_batch(loop):
            # Making the iterator draws a seed from torch's generator, where
            # the uninterrupted run made it at its start.
            self._late_torch_states = self._pipeline_states
        self._pipeline_states = None

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._late_torch_states is not None:
            restore_torch_rng_states(self._late_torch_states)
            self._late_torch_states = None


@HOOKS.register_module()
class ReferenceCheckpointHook(Hook):
    """Let ``load_from``, ``--resume`` and ``mim test --checkpoint`` take the authors' checkpoints.

    These are the SPM-PVT authors' checkpoints (their key layout:
    ``patch_embed2.spm.*``, ``block1.*``, ``head.*``, nested under
    ``model``).

    The runner calls it between reading a checkpoint and loading it into the
    model: it renames such a state dict to the model's keys, the backbone's
    under the SPMPVT module's name and ``head.*`` as ``head.fc.*`` where the
    model has a classifier head. Other checkpoints pass unchanged.

    It raises ``CheckpointError`` for a PVT v1 checkpoint (start from one
    through the backbone's ``init_cfg`` with ``from_pvt_v1=True`` instead) and
    for a model that does not hold exactly one SPMPVT below its top level.
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
