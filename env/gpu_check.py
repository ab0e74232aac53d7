#!/usr/bin/env python3
"""ihd's GPU check: every figure that decides whether a GPU machine runs the presets' full recipes, beside its target.

    env/gpu-check                          # the full check on the GPU: every full-scale preset's architectures
    env/gpu-check --presets nobrainer      # one preset's rows only
    env/gpu-check --device cpu --quick     # a small dry run of the same code on the CPU (env/test runs it)

What it measures, and the target each figure is judged against (the targets are derived, not measured):
- **training images/s per architecture**, at its preset's full input (size, channels, 2.5D slices) and batch, in the
  precision ihd chooses (`ihd.backbones.choose_precision`) + channels-last, eager and `torch.compile`d.
  Target: the rate the plan assumes, i.e. the rate behind `ihd_presets --scale full --smoke`'s GPU-hour estimate
  (`ihd.pipeline.H100`: a sustained share `util` of an H100's dense bf16 peak, over 3x the forward FLOPs of one image,
  counted here on this architecture at this input with torch's FlopCounterMode, as the estimate counts them). A figure
  under it means the recipe needs more GPU-hours than planned. Each preset's line adds the hours its level 1 needs
  at the measured rates (the best of eager and compiled) beside the plan's hours at the target rates.
- **torch.compile pays** when the seconds it saves over the architecture's whole level 1 (at the two measured
  rates) exceed its compile time paid once per fold.
- **loader images/s** (ihd's stage-2 cache of the preset's recipe in each layout -> augmented batches on the device,
  worker processes, random order), per distinct input (size, channels) of the presets. Target: what training
  consumes, i.e. the fastest training rate measured among the architectures that read that input.
- **the sequence model's training series/s** at each sequence preset's sizes (embedding widths of its
  architectures). Target: its `k` folds x epochs over the 21,744 train series within one GPU-hour
  (`21,744 x (k-1)/k x k x epochs / 3600` series/s).
The plan is made for one H100; on another card the same targets say whether it keeps the plan's pace.
Exit status: 0 every target met; 1 a target missed (each miss listed); 2 no CUDA device and `--device cpu` not asked.
On the CPU (`--device cpu`) it measures the same code paths at small sizes and prints the figures beside the GPU
targets, but does not judge them: the judging is checked by `--selftest` on given figures (a pass and a miss).
"""
import argparse, contextlib, io, json, math, os, sys, tempfile, time
from pathlib import Path
import numpy as np, torch

TRAIN_SLICES, TRAIN_SERIES = 752_803, 21_744   # the stage-2 train set
SEQ_LEVELS = {'sequence', 'blend'}             # a preset whose stage 4 may apply the sequence model (or a blend of it) gets a row


def cpu_model() -> str:
    "ihd's CPU description (model name, cores), with its SIMD level and whether it computes bf16 natively"
    from ihd.core import cpu_model as model
    from ihd.backbones import cpu_capability, cpu_bf16_native
    return f"{model()}, {cpu_capability()}, native bf16: {'yes' if cpu_bf16_native() else 'no'}"


def _list(v) -> list:
    return [o.strip() for o in v.split(',') if o.strip()] if isinstance(v, str) else list(v)


# ---------------------------------------------------------------- the plan: what each preset trains, and its targets
def preset_plan(name: str, scale: str = 'full') -> dict:
    "The full (or demo) recipe of preset `name` as the check needs it: input, batch, folds, epochs, archs, sequence"
    from ihd.core import preset_scope, merge_settings
    from ihd.pixels import Recipe
    with preset_scope(name, scale):
        r, l1, k = Recipe.from_settings(), merge_settings('level1'), int(merge_settings('tables').n_folds)
        s, blend = merge_settings('sequence'), _list(merge_settings('blend').candidates)
    return dict(preset=name, recipe=r, sz=r.sz, n_in=r.n_channels, neighbours=r.neighbours, bs=int(l1.bs), folds=k,
                epochs=int(l1.epochs), archs=_list(l1.archs), sequence=bool(SEQ_LEVELS & set(blend)),
                seq=dict(epochs=int(s.epochs), bs=int(s.bs), rnn=s.rnn, hidden=s.hidden, proj=s.proj, layers=s.layers))


def plan(name: str = 'H100'):
    "The estimate's card assumptions (`ihd.pipeline.H100`: bf16 peak TFLOP/s and the share `util` of it sustained)"
    from ihd import pipeline
    return getattr(pipeline, name)


def train_target(fwd_flops: float, card=None) -> float:
    "Images/s the plan assumes for an architecture of `fwd_flops` forward FLOPs per image (training: 3x the forward)"
    card = card or plan()
    return card.bf16_tflops*1e12*card.util/(3*fwd_flops)


def fwd_flops(model, n_in: int, sz: int, device) -> float:
    "Forward FLOPs of one `(n_in, sz, sz)` image through `model` (torch's FlopCounterMode: convolutions and matrix products)"
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.zeros(1, n_in, sz, sz, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), FlopCounterMode(display=False) as fc: model.eval()(x)
    model.train()
    return float(fc.get_total_flops())


def seq_target(p: dict, hours: float = 1.) -> float:
    "Series/s the sequence model of plan `p` must train at for its folds x epochs to fit `hours` GPU-hours"
    return TRAIN_SERIES*(p['folds'] - 1)/p['folds']*p['folds']*p['seq']['epochs']/(hours*3600)


# ---------------------------------------------------------------- judging (pure: tested by --selftest on given figures)
def compile_pays(eager: float, compiled: float, compile_s: float, images: float, folds: int) -> bool:
    "Whether `torch.compile` saves more over `images` trained (its rate against eager's) than it costs, once per fold"
    if not (eager > 0 and compiled > 0): return False
    return images/eager - images/compiled > compile_s*folds


def judge(rows: list) -> list:
    "The misses among `rows` (dicts with `what`, `value`, `target`, `unit`): a line each; a NaN or failed figure misses"
    miss = []
    for r in rows:
        t = r.get('target')
        if t is None: continue
        v = r.get('value')
        if v is None or not math.isfinite(v) or v < t:
            why = r.get('error') or (f"{v:,.1f} < {t:,.1f} {r['unit']}" if v is not None and math.isfinite(v) else 'no figure')
            miss.append(f"{r['what']}: {why}")
    return miss


def verdict(rows: list, judged: bool) -> int:
    "Print the outcome and return the exit status: 0 (every target met, or a CPU dry run), 1 (a target missed)"
    if not judged: print("gpu-check: CPU dry run done: every code path ran; GPU targets not judged on a CPU"); return 0
    misses = judge(rows)
    for m in misses: print(f"MISS {m}")
    print(f"gpu-check: {'every target met' if not misses else f'{len(misses)} target(s) missed'}")
    return 1 if misses else 0


def selftest() -> int:
    "The judging rules on given figures: a pass, a miss, a failed figure, and torch.compile's break-even"
    ok = [dict(what='train a', value=120., target=100., unit='images/s'), dict(what='note', value=1., target=None, unit='')]
    bad = ok + [dict(what='loader x', value=80., target=100., unit='images/s'),
                dict(what='train b', value=float('nan'), target=50., unit='images/s', error='out of memory at batch 32')]
    checks = [judge(ok) == [], len(judge(bad)) == 2, 'loader x: 80.0 < 100.0 images/s' in judge(bad),
              'train b: out of memory at batch 32' in judge(bad),
              compile_pays(100., 150., 60., 1e6, 5), not compile_pays(100., 101., 600., 1e5, 5), not compile_pays(100., 0., 1., 1e6, 5)]
    from fastcore.basics import AttrDict
    checks.append(abs(train_target(1e9, AttrDict(bf16_tflops=100., util=.3)) - 1e4) < 1e-6)   # 30 TFLOP/s over 3 GFLOPs an image
    with contextlib.redirect_stdout(io.StringIO()) as out:
        codes = verdict(ok, True), verdict(bad, True), verdict(bad, False)
    checks += [codes == (0, 1, 0), 'MISS loader x' in out.getvalue(), '2 target(s) missed' in out.getvalue()]
    if all(checks): print("gpu-check selftest: judging on given figures ok (a pass, a miss, a failed figure, compile break-even)"); return 0
    print(f"gpu-check selftest FAILED: checks {[i for i, c in enumerate(checks) if not c]} wrong"); return 1


# ---------------------------------------------------------------- measuring
def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def _timed(f, device, n_imgs, reps):
    "`(images/s, seconds of the first call)`: the first call warms up (and compiles)"
    t = time.perf_counter(); f(); _sync(device); first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(reps): f()
    _sync(device)
    return n_imgs*reps/(time.perf_counter() - t), first


def _model(arch, n_in, neighbours, device):
    from ihd.backbones import create_model
    torch.manual_seed(0)
    slices = 2*neighbours + 1 if arch.endswith('@2.5d') else None
    return create_model(arch, n_in, slices=slices).to(device, memory_format=torch.channels_last)


def bench_model(arch, sz, n_in, neighbours, bs, steps, device, precision, compile_=False) -> dict:
    "Training and inference images/s of `arch` on `(bs, n_in, sz, sz)` batches (channels-last, `precision` autocast)"
    m = _model(arch, n_in, neighbours, device)
    flops = fwd_flops(m, n_in, sz, device)
    run = torch.compile(m) if compile_ else m
    dt = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision)
    x = torch.randn(bs, n_in, sz, sz, device=device).contiguous(memory_format=torch.channels_last)
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
    tr, first = _timed(train, device, bs*steps, 2)
    inf, _ = _timed(infer, device, bs*steps, 2)
    mem = torch.cuda.max_memory_allocated(device)/2**30 if device.type == 'cuda' else float('nan')
    return dict(train=tr, infer=inf, first_s=first, warm_s=bs*steps/tr, mem_gb=mem, flops=flops)


def safe_bench(*args, **kw) -> dict:
    "`bench_model`, with an error (out of memory, a failed compilation) returned as the row's error instead of raised"
    try: return bench_model(*args, **kw)
    except Exception as e:   # one architecture's failure is its row's miss, not the end of the check
        oom = isinstance(e, torch.cuda.OutOfMemoryError)
        return dict(train=float('nan'), infer=float('nan'), error=f"out of memory at batch {args[4]}" if oom else f"{type(e).__name__}: {e}"[:300])
    finally:
        if kw.get('compile_'): torch._dynamo.reset()   # the compiled graphs hold memory
        if torch.cuda.is_available(): torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()


def build_loader_cache(base: Path, p: dict, size: str, layout: str, sz: int, n_slices: int):
    "Stage 0 and 2 of about `n_slices` slices (whole series) of a synthetic `size` set under `base`, plan `p`'s recipe at `sz`, in `layout`"
    from ihd import synth, cache
    from ihd.pixels import Recipe
    root = synth.make_dataset(base/'data', size=size)
    work = base/f"work_{p['preset']}_{layout}"
    hd = cache._bench_subset(root, base/'tables', n_slices)   # stage 0 once; the cache of a subset of its series
    work.mkdir(parents=True, exist_ok=True); hd.to_parquet(work/'headers.parquet')
    rec = Recipe.from_dict(dict(p['recipe'].slice_fields(), sz=sz, neighbours=p['neighbours']))
    cache.build_cache(root, work, rec, progress=False, layout=layout)
    return work, rec


def bench_loader(work, rec, bs, n_batches, device, workers) -> float:
    "Images/s of ihd's loader (the stage-2 cache -> augmented, normalised batches on `device`), random order"
    from ihd import cache, level1
    sc = cache.SliceCache(work, rec)
    ids = cache.cached_ids(cache.cache_dir(work, rec))
    y = np.zeros((len(ids), 6), np.float32)
    mean, std = level1.norm_stats(sc, ids, 64)
    dl = level1.make_dls(sc, ids, y, ids[:bs], y[:bs], mean, std, bs=bs, device=device, n_workers=workers).train
    def load():
        it, k = iter(dl), 0
        while k < n_batches:
            try: next(it); k += 1
            except StopIteration: it = iter(dl)
    return _timed(load, device, bs*n_batches, 1)[0]


def emb_width(arch: str, n_in: int, neighbours: int) -> int:
    "The width of `arch`'s embedding (its body's feature channels), as level 1 hands it to the sequence model"
    m = _model(arch, n_in, neighbours, torch.device('cpu')).eval()
    with torch.no_grad(): return int(m[0](torch.zeros(1, n_in, 160, 160).contiguous(memory_format=torch.channels_last)).shape[1])


def bench_seq(p: dict, device, quick: bool) -> float:
    "Training series/s of plan `p`'s sequence model (its sizes; one embedding run per architecture, sparse files)"
    from ihd.sequence import bench_sequence
    from ihd.core import ihd_log_level, preset_scope
    dims = [64] if quick else [emb_width(a, p['n_in'], p['neighbours']) for a in p['archs']]
    ihd_log_level('WARNING')
    kw = dict(n_series=64, min_len=8, max_len=16, steps=2, infer_series=16) if quick else dict(n_series=4000, steps=20, infer_series=256)
    with preset_scope(p['preset'], 'demo' if quick else 'full'):
        r = bench_sequence(dims=dims, sparse=True, device=device, modes=None, **kw)
    return max(r.train.values())


# ---------------------------------------------------------------- the check
def _row(what, value, target, unit, **kw) -> dict:
    return dict(what=what, value=value, target=target, unit=unit, **kw)


def _fmt(r: dict, judged: bool) -> str:
    v = 'n/a' if r['value'] is None or not math.isfinite(r['value']) else f"{r['value']:,.1f}"
    if r['target'] is None: return f"  {r['what']:<72} {v:>10} {r['unit']}  {r.get('note', '')}"
    verdict = ('ok' if not judge([r]) else 'MISS') if judged else 'not judged (CPU dry run)'
    return f"  {r['what']:<72} {v:>10} {r['unit']}  target {r['target']:,.1f}: {verdict}  {r.get('note', '')}"


def arch_rows(p: dict, a, device, prec, judged) -> list:
    "Training (eager, compiled) and inference rows of each architecture of plan `p`, printed as they come"
    sz, bs, steps = (min(p['sz'], 64), 4, 1) if a.quick else (p['sz'], p['bs'], 10)
    rows, images = [], TRAIN_SLICES*(p['folds'] - 1)*p['epochs']   # every fold's model trains on the other folds
    for arch in p['archs']:
        e = safe_bench(arch, sz, p['n_in'], p['neighbours'], bs, steps, device, prec)
        c = safe_bench(arch, sz, p['n_in'], p['neighbours'], bs, steps, device, prec, compile_=True) if a.compile else None
        best = max(e['train'], c['train'] if c and not c.get('error') else float('nan'), key=lambda v: v if math.isfinite(v) else -1)
        target = train_target(e['flops']) if e.get('flops') else float('nan')
        tag = f"{p['preset']}: {arch} {sz} px x{p['n_in']}, batch {bs}"
        rows.append(_row(f"train {tag}", best, target, 'images/s', error=e.get('error'), arch=arch, preset=p['preset'], images=images,
                         note=f"eager {e['train']:,.1f}" + (f", peak {e['mem_gb']:.1f} GiB" if math.isfinite(e.get('mem_gb', float('nan'))) else '')))
        if c and c.get('error'):
            rows.append(_row(f"  torch.compile {arch}", float('nan'), None, 'images/s', note=f"failed: {c['error']}"))
        elif c:
            pays = compile_pays(e['train'], c['train'], c.get('first_s', 0.) - e.get('first_s', 0.), images, p['folds'])
            rows.append(_row(f"  torch.compile {arch}", c['train'], None, 'images/s',
                             note=f"{c['train']/e['train']:.2f}x eager, compile {c.get('first_s', 0.):.0f} s: "
                                  f"{'pays' if pays else 'does not pay'} over {images/1e6:.1f}M images"))
        rows.append(_row(f"  inference {arch}", e['infer'], None, 'images/s'))
        for r in rows[-(3 if c else 2):]: print(_fmt(r, judged), flush=True)
    return rows


def loader_rows(plans: list, trains: dict, a, device, judged, base: Path) -> list:
    "Loader rows per distinct input (size, channels, neighbours) and layout; target: the fastest training rate on it"
    from ihd import cache
    from ihd.core import ihd_log_level
    ihd_log_level('WARNING')
    layouts = getattr(cache, 'LAYOUTS', ('files', 'shards'))
    workers, rows, seen = (0 if a.quick else min(16, os.cpu_count() or 1)), [], set()
    for p in plans:
        sz = min(p['sz'], 64) if a.quick else p['sz']
        key = lambda q: (q['recipe'].base_name, q['neighbours'], q['n_in'])
        if key(p) in seen: continue
        seen.add(key(p))
        need = max(trains[q['preset']] for q in plans if key(q) == key(p))
        for lay in layouts:
            work, rec = build_loader_cache(base, p, 'tiny' if a.quick else 'demo', lay, sz, 40 if a.quick else 10**9)
            v = bench_loader(work, rec, 8 if a.quick else p['bs'], 4 if a.quick else 40, device, workers)
            rows.append(_row(f"loader {lay}: {rec.name} {sz} px x{rec.n_channels}, {workers} workers", v, need, 'images/s'))
            print(_fmt(rows[-1], judged), flush=True)
    return rows


def seq_rows(plans: list, a, device, judged) -> list:
    "The sequence model's training series/s per sequence preset, beside its target"
    rows = []
    for p in plans:
        if not p['sequence']: continue
        s = p['seq']
        v = bench_seq(p, device, a.quick)
        rows.append(_row(f"sequence {p['preset']}: {s['rnn']} x{s['layers']}, hidden {s['hidden']}, proj {s['proj']}, batch {s['bs']}",
                         v, seq_target(p), 'series/s', note=f"{p['folds']} folds x {s['epochs']} epochs in 1 GPU-hour"))
        print(_fmt(rows[-1], judged), flush=True)
    return rows


def preset_hours(plans: list, rows: list) -> dict:
    "Hours each preset's level 1 needs at the measured training rates, and at the plan's (NaN where a rate is missing)"
    out = {}
    for p in plans:
        r = [o for o in rows if o.get('preset') == p['preset'] and o['what'].startswith('train ')]
        h = lambda key: sum(o['images']/o[key] if o[key] and math.isfinite(o[key]) else float('nan') for o in r)/3600
        out[p['preset']] = dict(measured=h('value'), plan=h('target'))
        print(f"  {p['preset']}: level 1 needs {out[p['preset']]['measured']:,.1f} hours of this device at these rates; "
              f"at the plan's rates {out[p['preset']]['plan']:,.1f} GPU-hours (training epochs only)")
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda', help="cuda (default) or cpu (a dry run: figures printed, not judged)")
    ap.add_argument('--quick', action='store_true', help='small sizes and few steps (a dry run)')
    ap.add_argument('--presets', default=None, help='comma-separated presets (default: all; --quick: ihd, brainscan)')
    ap.add_argument('--no-compile', dest='compile', action='store_false', help='skip the torch.compile timings')
    ap.add_argument('--out', default=None, help='write the rows as JSON here too')
    ap.add_argument('--selftest', action='store_true', help='check the judging on given figures, then stop')
    a = ap.parse_args(argv)
    if a.quick or a.device == 'cpu': a.compile = a.compile and a.device != 'cpu' and not a.quick
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    st = selftest()
    if a.selftest or st: return st
    if a.device.startswith('cuda') and not torch.cuda.is_available():
        print(f"gpu-check: FAILED: no CUDA device here (torch {torch.__version__}, {cpu_model()}): nothing measured, "
              "nothing judged. Run it on a GPU machine, or `--device cpu --quick` for a dry run.", file=sys.stderr)
        return 2
    from ihd.backbones import choose_precision
    from ihd.core import preset_names
    device, judged, t0 = torch.device(a.device), a.device.startswith('cuda'), time.time()
    names = _list(a.presets) if a.presets else (['ihd', 'brainscan'] if a.quick else preset_names())
    plans = [preset_plan(n, 'demo' if a.quick else 'full') for n in names]
    prec = choose_precision(device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_model()
    print(f"gpu-check on {name} ({device}), torch {torch.__version__}, CPU {cpu_model()}, precision {prec} + channels-last; "
          f"presets {', '.join(names)} at {'demo (quick)' if a.quick else 'full'} scale")
    if not judged: print("  CPU dry run: the targets below are GPU targets; the figures are printed beside them, not judged")
    rows = []
    for p in plans: rows += arch_rows(p, a, device, prec, judged)
    trains = {p['preset']: max([r['value'] for r in rows if r.get('preset') == p['preset'] and r['what'].startswith('train ')
                                and math.isfinite(r['value'])] or [0.]) for p in plans}
    with tempfile.TemporaryDirectory(prefix='ihd_gpu_check_') as tmp:
        rows += loader_rows(plans, trains, a, device, judged, Path(os.environ.get('IHD_GPU_CHECK_DIR') or tmp))
    rows += seq_rows(plans, a, device, judged)
    hours = preset_hours(plans, rows)
    misses = judge(rows) if judged else []
    if a.out: Path(a.out).write_text(json.dumps(dict(device=name, cpu=cpu_model(), torch=torch.__version__, precision=prec,
                                                     judged=judged, hours=hours, misses=misses, rows=rows), indent=1, default=str))
    print(f"took {time.time()-t0:.0f} s")
    return verdict(rows, judged)


if __name__ == '__main__':
    sys.exit(main())
