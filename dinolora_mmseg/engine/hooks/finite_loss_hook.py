import torch
from mmengine.dist import all_reduce, get_rank, get_world_size
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop training at the first NaN or infinite loss, naming the iteration and ranks.

    Runs before the checkpoint hook of the same iteration, so weights spoiled by a
    non-finite update never reach a checkpoint. The ranks agree (one all-reduce of a
    flag per iteration) and all stop at the same iteration.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = torch.as_tensor(outputs['loss']).detach()
        not_finite = torch.zeros(get_world_size(), device=loss.device)
        not_finite[get_rank()] = float(not torch.isfinite(loss).all())
        all_reduce(not_finite, op='sum')
        ranks = not_finite.nonzero().flatten().tolist()
        if ranks:
            where = f' on rank(s) {ranks}' if get_world_size() > 1 else ''
            raise FloatingPointError(
                f'loss is not finite{where} at iteration {runner.iter + 1} (this rank: '
                f'{loss.float().mean().item()}): training stopped so that no checkpoint holds '
                'the non-finite weights (lower the learning rate, or check the data of this '
                'iteration)')
