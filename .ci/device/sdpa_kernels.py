"""On a CUDA GPU: do our backbones' attention calls run on the fused SDPA kernels?

For DINOv2 ViT-L/14 (4 registers) at 518 px and DINOv3 ViT-L/16 at 512 px, LoRA rank 3
on q and v, random weights, batch 2: forward and backward with only the flash kernel
allowed in bfloat16 (autocast) and only the memory-efficient kernel in float32, each
with and without ``with_cp``. A call the allowed kernel cannot take raises, so a row
that passes ran on that kernel. One JSON line per case into ``--out``, written as it
finishes (time of one step after a warm-up, peak memory).

    python .ci/device/sdpa_kernels.py --out $OUT/sdpa.jsonl [--dry-run]
"""
import argparse
import json
import time

CASES = [(family, kernel, with_cp)
         for family in ('DINOv2', 'DINOv3')
         for kernel in ('flash_bf16', 'efficient_fp32')
         for with_cp in (False, True)]


def backbone(family: str, with_cp: bool):
    from dinolora_mmseg.models import DINOv2, DINOv3
    lora = dict(rank=3, alpha=3, dropout=0.0, targets=('q', 'v'))
    if family == 'DINOv2':
        return DINOv2(arch='large', num_register_tokens=4, lora=lora, with_cp=with_cp), 518
    return DINOv3(arch='large', lora=lora, with_cp=with_cp), 512


def run_case(family: str, kernel: str, with_cp: bool) -> dict:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    model, size = backbone(family, with_cp)
    model = model.cuda().train()
    x = torch.randn(2, 3, size, size, device='cuda')
    backend, dtype = ((SDPBackend.FLASH_ATTENTION, torch.bfloat16) if kernel == 'flash_bf16'
                      else (SDPBackend.EFFICIENT_ATTENTION, torch.float32))

    def step():
        with sdpa_kernel([backend]), torch.autocast('cuda', dtype=torch.bfloat16,
                                                    enabled=dtype is torch.bfloat16):
            loss = sum(out.float().square().mean() for out in model(x))
        loss.backward()

    step()  # warm-up (and the kernel choice: raises if the kernel cannot run)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step()
    torch.cuda.synchronize()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    return dict(step_ms=round(1e3 * (time.perf_counter() - start), 2),
                peak_mib=round(torch.cuda.max_memory_allocated() / 2**20),
                lora_grads_finite=all(bool(g.isfinite().all()) for g in grads if g is not None),
                trainable_with_grad=sum(g is not None for g in grads))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True)
    parser.add_argument('--dry-run', action='store_true', help='list the cases only')
    args = parser.parse_args()
    for family, kernel, with_cp in CASES:
        row = dict(family=family, kernel=kernel, with_cp=with_cp)
        if args.dry_run:
            print('would run', json.dumps(row))
            continue
        try:
            row.update(run_case(family, kernel, with_cp), ok=True)
        except Exception as error:  # one failed case must not hide the others
            row.update(ok=False, error=f'{type(error).__name__}: {str(error)[:500]}')
        print(json.dumps(row), flush=True)
        with open(args.out, 'a') as f:
            f.write(json.dumps(row) + '\n')


if __name__ == '__main__':
    main()
