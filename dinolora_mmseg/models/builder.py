"""Building a config's model outside the Runner: the one way every tool does it."""
from typing import Optional, Union

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from torch import nn

from ..utils.checkpoint_file import is_trusted, load_checkpoint_to_model
from ..utils.config import registry_scope
from .backbones.frozen_pretrained import check_pretrained_records


def build_model(cfg: Config, checkpoint: Optional[str] = None,
                device: Union[str, torch.device] = 'cpu', trusted: bool = False) -> nn.Module:
    """The model of ``cfg``, with ``checkpoint`` loaded strictly, in eval mode on ``device``.

    Built in the config's registry scope (``'mmseg'`` by default); as MMSeg's
    ``init_model``, it keeps ``model.cfg`` and the checkpoint's ``meta['dataset_meta']``
    as ``model.dataset_meta`` (None without one).

    Args:
        cfg (Config): The config (:func:`~dinolora_mmseg.utils.config.load_config`).
        checkpoint (str, optional): Checkpoint file of the model.
        device (str | torch.device): Where to put the model.
        trusted (bool): The user trusts ``checkpoint`` (as the config's
            ``trusted_checkpoints`` can): unpickle it in full, not weights-only.

    Raises:
        RuntimeError: The keys do not match (listed), or the file is damaged.
    """
    init_default_scope(registry_scope(cfg))
    model = MODELS.build(cfg.model)
    model.cfg = cfg
    model.dataset_meta = None
    if checkpoint is not None:
        load_model_checkpoint(model, checkpoint, trusted or is_trusted(cfg, checkpoint))
    return model.to(device).eval()


def load_model_checkpoint(model: nn.Module, checkpoint: str, trusted: bool = False) -> None:
    """Load ``checkpoint`` into ``model`` as :func:`build_model` does: strictly, the
    pretrained files its ``meta`` records checked against the model's
    (:func:`~.backbones.frozen_pretrained.check_pretrained_records`).

    Args:
        model (nn.Module): The built model.
        checkpoint (str): Its checkpoint file.
        trusted (bool): The user named ``checkpoint`` as trusted: unpickle it in full.
    """
    loaded = load_checkpoint_to_model(model, checkpoint, strict=True, trusted=trusted)
    check_pretrained_records(model, loaded)
    model.dataset_meta = (loaded.get('meta') or {}).get('dataset_meta')
