"""Numerical precision of a run: what ``--amp`` becomes on this machine, and TF32."""
import torch
from mmengine.config import Config
from mmengine.logging import print_log

AMP_WRAPPERS = ('AmpOptimWrapper', 'BF16OptimWrapper')


def use_amp(optim_wrapper: dict) -> str:
    """Turn the config's ``optim_wrapper`` into mixed precision for this machine, in place
    (``--amp``), and return the line it logs: ``BF16OptimWrapper`` on the CPU and on GPUs
    with bfloat16, ``AmpOptimWrapper`` (float16, dynamic loss scaling) on the others (V100,
    T4); an AMP wrapper already set stays."""
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
    """Let float32 matrix products and convolutions on CUDA use TF32 (the default: inputs
    rounded to a 10-bit mantissa, several times faster), or not
    (``env_cfg.allow_tf32=False``); logged. Returns whether TF32 is on."""
    allow = bool((cfg.get('env_cfg') or {}).get('allow_tf32', True))
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    print_log('TF32 for float32 matmuls and convolutions on CUDA: '
              + ('on (env_cfg.allow_tf32=False turns it off)' if allow
                 else 'off (env_cfg.allow_tf32=False)'), logger='current')
    return allow
