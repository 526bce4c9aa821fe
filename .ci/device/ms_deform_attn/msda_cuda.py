"""Build mmcv's CUDA multi-scale deformable attention alone and give it to a CPU-only mmcv.

    python .ci/device/ms_deform_attn/msda_cuda.py MMCV_SRC BUILD_DIR   # build, check it

``install(MMCV_SRC, BUILD_DIR)`` compiles ``ms_deform_attn_cuda.cu`` of mmcv's source
release (``prepare.sh`` puts it into ``.device/mmcv-src``) with ``bind.cpp`` through
``torch.utils.cpp_extension.load`` for the visible GPU, and sets the two functions on
``mmcv._ext``, which ``mmcv.ops.MultiScaleDeformableAttnFunction`` calls (CUDA tensors go
to the new op, others to mmcv's own). ``sitecustomize.py`` next to this file calls it in
every Python process when ``DINOLORA_MSDA_SRC`` is set (the build is cached in
``DINOLORA_MSDA_BUILD``), so that ``tools/train.py`` runs Mask2Former on the GPU.
"""
import glob
import os
import os.path as osp
import sys


def build(mmcv_src: str, build_dir: str):
    import torch
    from torch.utils.cpp_extension import load
    csrc = osp.join(mmcv_src, 'mmcv', 'ops', 'csrc')
    if not os.environ.get('TORCH_CUDA_ARCH_LIST'):  # the visible GPU only
        os.environ['TORCH_CUDA_ARCH_LIST'] = '.'.join(map(str, torch.cuda.get_device_capability()))
    os.makedirs(build_dir, exist_ok=True)
    # Headers of the CUDA libraries that torch's headers include (cusparse.h, ...) from
    # torch's pip packages, searched after the toolkit's own (a bare toolkit lacks them).
    libraries = sorted(glob.glob(osp.join(osp.dirname(torch.__file__), '..', 'nvidia', '*',
                                          'include')))
    after = [flag for include in libraries for flag in ('-isystem', osp.abspath(include))]
    return load(name='dinolora_ms_deform_attn',
                sources=[osp.join(osp.dirname(osp.abspath(__file__)), 'bind.cpp'),
                         osp.join(csrc, 'pytorch', 'cuda', 'ms_deform_attn_cuda.cu')],
                extra_include_paths=[osp.join(csrc, 'common'), osp.join(csrc, 'common', 'cuda')],
                extra_cflags=['-O2', '-std=c++20'] + after,
                extra_cuda_cflags=['-O2', '-std=c++20'] + after,
                build_directory=build_dir, verbose=False)


def install(mmcv_src: str, build_dir: str):
    """Build (or reuse) the op and route mmcv's CUDA calls of it there."""
    import torch  # noqa: F401  (mmcv._ext needs torch's libraries loaded)
    import mmcv._ext as ext
    cuda_op = build(mmcv_src, build_dir)
    for name in ('ms_deform_attn_forward', 'ms_deform_attn_backward'):
        cpu_op, gpu_op = getattr(ext, name), getattr(cuda_op, name)

        def routed(*args, _cpu=cpu_op, _gpu=gpu_op, **kwargs):
            value = kwargs.get('value', args[0] if args else None)
            return (_gpu if value is not None and value.is_cuda else _cpu)(*args, **kwargs)
        setattr(ext, name, routed)
    return cuda_op


def check() -> float:
    """Largest difference between the op and mmcv's PyTorch version, forward and
    gradients, float32 on the GPU."""
    import torch
    from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttnFunction,
                                                  multi_scale_deformable_attn_pytorch)
    torch.manual_seed(0)
    shapes = torch.tensor([[8, 8], [4, 4]], device='cuda')
    starts = torch.tensor([0, 64], device='cuda')
    value = torch.rand(2, 80, 4, 8, device='cuda', requires_grad=True)
    locations = torch.rand(2, 5, 4, 2, 3, 2, device='cuda', requires_grad=True)
    weights = torch.rand(2, 5, 4, 2, 3, device='cuda').softmax(-1).requires_grad_()
    ours = MultiScaleDeformableAttnFunction.apply(value, shapes, starts, locations, weights, 64)
    grads = torch.autograd.grad(ours.sum(), (value, locations, weights))
    ref = multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)
    ref_grads = torch.autograd.grad(ref.sum(), (value, locations, weights))
    return max((a - b).abs().max().item()
               for a, b in zip((ours,) + grads, (ref,) + ref_grads))


if __name__ == '__main__':
    install(sys.argv[1], sys.argv[2])
    error = check()
    print(f'ms_deform_attn CUDA op built; max |difference| to the PyTorch version: {error:.2e}')
    sys.exit(0 if error < 1e-4 else 1)
