"""Numerical precision of a run: what ``--amp`` becomes on this machine, and TF32."""
import logging

import torch
from mmengine.config import Config
from mmengine.logging import print_log

AMP_WRAPPERS = ('AmpOptimWrapper', 'BF16OptimWrapper')


def use_amp(optim_wrapper: dict) -> str:
    """Turn ``optim_wrapper`` into mixed precision for this machine, in place (``--amp``).

    - the CPU, or a GPU with bfloat16 (``torch.cuda.is_bf16_supported``, compute
      capability 8.0 and later): ``BF16OptimWrapper``, bfloat16 autocast without loss
      scaling (bfloat16 has float32's exponent range; MMEngine 0.10.7's
      ``AmpOptimWrapper`` would add a ``GradScaler`` even for bfloat16);
    - a GPU without bfloat16 (V100, T4): ``AmpOptimWrapper``, float16 autocast with
      dynamic loss scaling.

    A config whose wrapper is already one of these is left as it is. The choice and its
    reason are logged.

    Args:
        optim_wrapper (dict): The config's ``optim_wrapper``.

    Returns:
        str: The log line (what was chosen and why).
    """
    kind = optim_wrapper.get('type', 'OptimWrapper')
    if kind in AMP_WRAPPERS:
        message = f'--amp: the config already trains with {kind}; left as it is'
    elif not torch.cuda.is_available():
        optim_wrapper['type'] = 'BF16OptimWrapper'
        message = ('--amp: no CUDA: bfloat16 autocast on the CPU without loss scaling '
                   '(BF16OptimWrapper)')
    else:
        name = torch.cuda.get_device_name()
        capability = '.'.join(map(str, torch.cuda.get_device_capability()))
        if torch.cuda.is_bf16_supported(including_emulation=False):
            optim_wrapper['type'] = 'BF16OptimWrapper'
            message = (f'--amp: {name} (compute capability {capability}) has bfloat16: '
                       'bfloat16 autocast without loss scaling (BF16OptimWrapper)')
        else:
            optim_wrapper.update(type='AmpOptimWrapper', dtype='float16',
                                 loss_scale='dynamic')
            message = (f'--amp: {name} (compute capability {capability}) has no bfloat16: '
                       'float16 autocast with dynamic loss scaling (AmpOptimWrapper)')
    print_log(message, logger='current')
    return message


def set_tf32(cfg: Config) -> bool:
    """Let float32 matrix products and convolutions on CUDA use TF32 (the default), or
    not (``env_cfg.allow_tf32=False``); logged.

    TF32 rounds the inputs of float32 products to a 10-bit mantissa (relative error
    about 1e-3 per product) and runs them on the tensor cores of Ampere and later GPUs,
    several times faster; accumulation stays float32.

    Args:
        cfg (Config): The run's config.

    Returns:
        bool: Whether TF32 is on.
    """
    allow = bool((cfg.get('env_cfg') or {}).get('allow_tf32', True))
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    print_log('TF32 for float32 matmuls and convolutions on CUDA: '
              + ('on (env_cfg.allow_tf32=False turns it off)' if allow
                 else 'off (env_cfg.allow_tf32=False)'),
              logger='current', level=logging.INFO)
    return allow
