#!/usr/bin/env python3
"""ihd's GPU check: one table of level-1 training, loader and inference images/s on this machine.

Ready for the day a GPU is lent: `env/gpu-check` (under 8 minutes on one GPU). It measures
- training images/s of resnet18 and resnet50 at 256 px: mixed precision as ihd chooses it
  (`ihd.backbones.choose_precision`) + channels-last, eager and `torch.compile`d (`--no-compile` skips it);
- inference images/s of the same models (no TTA);
- loader images/s: ihd's own stage-2 cache (per-slice files and memory-mapped shards) and fastai loader (worker
  processes, pinned memory, augmentation on the device in batches) over a synthetic dataset it makes, at 256 px,
  with and without neighbour slices;
- the sequence model's series/s once ihd has one (a row says so until then).
On a machine without CUDA it stops with a line saying so, unless `--device cpu` asks for a dry run.

    env/gpu-check                      # the full check on the GPU
    env/gpu-check --device cpu --quick # a small dry run of the same code on the CPU
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path
import numpy as np, torch


def cpu_model() -> str:
    "ihd's CPU description (model name, cores), with its SIMD level and whether it computes bf16 natively"
    from ihd.core import cpu_model as model
    from ihd.backbones import cpu_capability, cpu_bf16_native
    return f"{model()}, {cpu_capability()}, native bf16: {'yes' if cpu_bf16_native() else 'no'}"


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def _timed(f, device, n_imgs, reps):
    f(); _sync(device)  # warm-up (and compilation)
    t = time.perf_counter()
    for _ in range(reps): f()
    _sync(device)
    return n_imgs*reps/(time.perf_counter() - t)


def bench_model(arch, sz, bs, steps, device, precision, compile_=False):
    "Training and inference images/s of `arch` at `sz` px (channels-last, `precision` autocast)"
    from ihd.backbones import create_model
    torch.manual_seed(0)
    m = create_model(arch, 3).to(device, memory_format=torch.channels_last)
    run = torch.compile(m) if compile_ else m
    dt = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision)
    x = torch.randn(bs, 3, sz, sz, device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(bs, 6, device=device) < 0.1).float()
    opt = torch.optim.AdamW(m.parameters(), 1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == 'fp16')
    def train():
        for _ in range(steps):
            with torch.autocast(device.type, dtype=dt or torch.float32, enabled=dt is not None):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(run(x).float(), y)
            opt.zero_grad(set_to_none=True); scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
    @torch.no_grad()
    def infer():
        m.eval()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=dt or torch.float32, enabled=dt is not None): run(x)
        m.train()
    return _timed(train, device, bs*steps, 2), _timed(infer, device, bs*steps, 2)


def bench_loader(sz, bs, n_batches, device, workers, size, neighbours, layout='files'):
    "Images/s of ihd's loader (stage-2 cache in `layout` -> augmented, normalised batches on `device`), random order"
    from ihd import synth, tables, pixels, cache, level1
    from ihd.core import ihd_log_level
    ihd_log_level('WARNING')  # the stages' own progress lines would bury the table
    base = Path(os.environ.get('IHD_GPU_CHECK_DIR') or tempfile.mkdtemp(prefix='ihd_gpu_check_'))
    root = synth.make_dataset(base/'data', size=size)
    work = base/f'work_{layout}'
    tables.make_tables(root, work, progress=False)
    rec = pixels.Recipe.from_settings(sz=sz, neighbours=neighbours)
    cache.build_cache(root, work, rec, progress=False, layout=layout)
    sc = cache.SliceCache(work, rec)
    import pandas as pd
    ids = pd.read_parquet(work/'train.parquet')['ID'].tolist()
    y = np.zeros((len(ids), 6), np.float32)
    mean, std = level1.norm_stats(sc, ids, 64)
    dl = level1.make_dls(sc, ids, y, ids[:bs], y[:bs], mean, std, bs=bs, device=device, n_workers=workers).train
    def load():
        it, k = iter(dl), 0
        while k < n_batches:
            try: next(it); k += 1
            except StopIteration: it = iter(dl)
    return _timed(load, device, bs*n_batches, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--quick', action='store_true', help='small sizes and few steps (a dry run)')
    ap.add_argument('--no-compile', action='store_true', help='skip the torch.compile timings (on by default on a GPU)')
    ap.add_argument('--out', default=None, help='write the table as JSON here too')
    a = ap.parse_args()
    if a.device.startswith('cuda') and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device here (torch {torch.__version__}, {cpu_model()}): nothing measured. "
              "Run it on a GPU machine, or `--device cpu --quick` for a dry run.")
        return 0
    from ihd.backbones import choose_precision
    device = torch.device(a.device)
    sz, bs, steps = (64, 8, 2) if a.quick else (256, 64, 20)
    prec = choose_precision(device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_model()
    print(f"gpu-check on {name} ({device}), torch {torch.__version__}, CPU {cpu_model()}, "
          f"precision {prec} + channels-last, {sz} px")
    rows, t0 = [], time.time()
    for arch in ('resnet18', 'resnet50'):
        for comp in ([False, True] if device.type == 'cuda' and not a.no_compile else [False]):
            tr, inf = bench_model(arch, sz, bs if arch == 'resnet18' else bs//2, steps, device, prec, comp)
            tag = f"{arch}{' compiled' if comp else ''}"
            rows += [(f'train {tag}', tr, 'images/s'), (f'inference {tag}', inf, 'images/s')]
            print(f"  {rows[-2][0]:<34} {tr:10.1f} images/s\n  {rows[-1][0]:<34} {inf:10.1f} images/s", flush=True)
    workers = min(16, os.cpu_count() or 1)
    for layout in ('files', 'shards'):
        for nb in (0, 1):
            r = bench_loader(sz, bs, 4 if a.quick else 40, device, 0 if a.quick else workers,
                             'tiny' if a.quick else 'demo', nb, layout)
            rows.append((f'loader {layout}, neighbours={nb}, {0 if a.quick else workers} workers', r, 'images/s'))
            print(f"  {rows[-1][0]:<40} {r:10.1f} images/s", flush=True)
    rows.append(('sequence model', float('nan'), 'series/s (not built yet: issue 12)'))
    print(f"  {rows[-1][0]:<34} {'n/a':>10} {rows[-1][2]}")
    need = 3750
    tr18 = dict((k, v) for k, v, _ in rows)['train resnet18']
    print(f"target: the loader keeps up with >= {need} training images/s (1 arch x 5 folds x 4 epochs of the full set "
          f"in one GPU-hour); resnet18 trains at {tr18:.0f} images/s here. Took {time.time()-t0:.0f} s.")
    if a.out:
        Path(a.out).write_text(json.dumps(dict(device=name, cpu=cpu_model(), torch=torch.__version__, precision=prec,
                                               sz=sz, rows=[dict(what=k, value=v, unit=u) for k, v, u in rows]), indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
