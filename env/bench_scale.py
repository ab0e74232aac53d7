#!/usr/bin/env python3
"""Whole-pipeline scale run: every stage's command on synthetic datasets of growing size, with wall time, peak
memory, the slope of peak memory per slice, and projections to the full RSNA stage-2 set (874,034 slices).

Each stage runs as its own command under GNU time (`/usr/bin/time -f '%e %M'`), on the same machine, one at a
time, so the figures are comparable across sizes. Peak memory is the largest resident set of one process of
the stage (the command or one of its workers): what must fit on a machine. The slope comes from a least-squares
line through the sizes run; a flat stage has a slope near zero.

    .venv/bin/python env/bench_scale.py --sizes tiny,demo,bench  # writes data/runs/bench_scale.{json,md}
Level 1 is timed for one fold and one epoch (images/s is what scales); level 2 at scale is `ihd_bench_stack` on
feature tables of the same row counts, because training every level-1 fold on the bench set takes hours on a CPU.
"""
import argparse, json, os, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FULL = 874_034  # stage-2 train + test slices
BIN = ROOT/'.venv'/'bin'


def cpu_model() -> str:
    "ihd's CPU description (model name, cores), with its SIMD level and whether it computes bf16 natively"
    from ihd.core import cpu_model as model
    from ihd.backbones import cpu_capability, cpu_bf16_native
    return f"{model()}, {cpu_capability()}, native bf16: {'yes' if cpu_bf16_native() else 'no'}"


def timed(cmd: list, log: Path) -> tuple[float, float]:
    "Run `cmd` under GNU time; (wall seconds, peak RSS in MB). Its output goes to `log`"
    tf = log.with_suffix('.time')
    with log.open('w') as f:
        r = subprocess.run(['/usr/bin/time', '-o', str(tf), '-f', '%e %M', *map(str, cmd)], stdout=f, stderr=subprocess.STDOUT,
                           env={**os.environ, 'MPLBACKEND': 'Agg'})
    if r.returncode: raise RuntimeError(f"{' '.join(map(str, cmd))} failed (exit {r.returncode}); see {log}")
    wall, kb = tf.read_text().split()[-2:]
    return float(wall), int(kb)/1024


def n_slices(data: Path) -> int:
    return sum(1 for d in ('stage_2_train', 'stage_2_test') for _ in (data/d).glob('*.dcm'))


def run_size(size: str, base: Path, sz: int, logs: Path) -> list[dict]:
    data = ROOT/'data'/('synth' if size == 'demo' else size)
    if not (data/'synth.json').is_file():
        timed([BIN/'ihd_synth', '--dest', data, '--size', size], logs/f'{size}_synth.log')
    n = n_slices(data)
    work, models = base/size/'work', base/size/'models'
    shutil.rmtree(base/size, ignore_errors=True)
    rows = []
    steps = [('0 tables', [BIN/'ihd_tables', '--data', data, '--work', work, '--n-folds', 3]),
             ('2 cache', [BIN/'ihd_cache', '--data', data, '--work', work, '--sz', sz]),
             ('3 level 1 (1 fold, 1 epoch)', [BIN/'ihd_train', '--data', data, '--work', work, '--models', models,
                                              '--arch', 'resnet18', '--fold', 0, '--epochs', 1, '--sz', sz, '--tta', 1])]
    for name, cmd in steps:
        wall, mb = timed(cmd, logs/f"{size}_{name.split()[0]}.log")
        rows.append(dict(size=size, stage=name, slices=n, wall_s=round(wall, 1), peak_mb=round(mb, 1)))
        print(f"{size:>6} {name:<30} {n:>7} slices {wall:8.1f} s {mb:8.1f} MB", flush=True)
    nrows = int(n*0.86)  # labelled share, as the level-2 feature table has one row per train slice
    wall, mb = timed([BIN/'ihd_bench_stack', '--n-rows', nrows, '--folds', 1, '--n-rounds', 20], logs/f'{size}_4.log')
    rows.append(dict(size=size, stage='4 level 2 (bench_stack, 1 fold)', slices=n, wall_s=round(wall, 1), peak_mb=round(mb, 1)))
    print(f"{size:>6} {'4 level 2 (bench_stack, 1 fold)':<30} {n:>7} slices {wall:8.1f} s {mb:8.1f} MB", flush=True)
    return rows


def fit(xs, ys):
    "Least-squares slope and intercept"
    n = len(xs); mx, my = sum(xs)/n, sum(ys)/n
    sxx = sum((x - mx)**2 for x in xs)
    b = sum((x - mx)*(y - my) for x, y in zip(xs, ys))/sxx if sxx else 0.
    return b, my - b*mx


def summarise(rows: list[dict]) -> str:
    lines = [f"CPU: {cpu_model()}; projections are linear in slices from the largest size "
             f"(time) and from the least-squares line through all sizes (memory).", '',
             '| stage | ' + ' | '.join(f"{r['size']} ({r['slices']:,} slices)" for r in rows if r['stage'].startswith('0')) +
             ' | peak MB per 1k slices | projected to 874,034 slices |', '|---|' + '---:|'*(len({r['size'] for r in rows}) + 2)]
    for st in dict.fromkeys(r['stage'] for r in rows):
        rs = [r for r in rows if r['stage'] == st]
        b, a = fit([r['slices'] for r in rs], [r['peak_mb'] for r in rs])
        big = max(rs, key=lambda r: r['slices'])
        t_full = big['wall_s']*FULL/big['slices']
        cells = ' | '.join(f"{r['wall_s']:.1f} s, {r['peak_mb']:.0f} MB" for r in rs)
        lines.append(f"| {st} | {cells} | {1000*b:.2f} | {t_full/60:.0f} min, {a + b*FULL:,.0f} MB |")
    return '\n'.join(lines)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', default='tiny,demo,bench')
    ap.add_argument('--sz', type=int, default=96)
    ap.add_argument('--scratch', default=None, help='folder for tables, caches and runs (default: data/work/bench_scale)')
    a = ap.parse_args()
    base = Path(a.scratch or ROOT/'data'/'work'/'bench_scale')
    logs = ROOT/'data'/'runs'/'bench_scale_logs'; logs.mkdir(parents=True, exist_ok=True)
    t0, rows = time.time(), []
    for s in a.sizes.split(','): rows += run_size(s, base, a.sz, logs)
    md = summarise(rows)
    out = ROOT/'data'/'runs'
    (out/'bench_scale.json').write_text(json.dumps(dict(cpu=cpu_model(), cores=os.cpu_count(), rows=rows), indent=1))
    (out/'bench_scale.md').write_text(md + '\n')
    print(md); print(f"took {time.time() - t0:.0f} s")
