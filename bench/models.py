"""The models compared: each trained on green 2021-01, scored on 2021-02 and 2021-03, with and without the
distance, and the 80 % interval's coverage on 2021-03.

    .venv/bin/python bench/models.py              # every model (the full months: minutes)
    .venv/bin/python bench/models.py linear       # one model, the shortest run

Uses the same library calls as the pipeline's steps (features.featurize -> train.fit_candidate) and the
one predict function (train.predict), in process and without MLflow, so the figures are the model's alone.
Data: $TAXI_DATA_DIR, else ../shared/data.
"""
from results import recorded  # bench/results.py
import argparse, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault('TAXI_DATA_DIR', str(ROOT.parent / 'shared' / 'data'))
import numpy as np, pandas as pd
from taxi_duration.data import load
from taxi_duration.features import featurize
from taxi_duration.rides import RIDE_COLUMNS
from taxi_duration.models import DEFAULT_ALPHA, MODELS
from taxi_duration.train import fit_candidate, interval_metrics, metrics, predict


def coverage_table(y, p) -> pd.DataFrame:
    "Coverage and width of the interval overall, by distance given or not, and by decile of prediction."
    df = pd.DataFrame(dict(y=y, m=p.minutes, lo=p.p10, hi=p.p90, dist=p.used_distance))
    df['inside'], df['width'] = (df.lo <= df.y) & (df.y <= df.hi), df.hi - df.lo
    rows = [('all', df)] + [(f'distance {"given" if k else "not given"}', g) for k, g in df.groupby('dist')]
    df['decile'] = pd.qcut(df.m, 10, labels=False)
    rows += [(f'decile {d + 1} ({g.m.min():.1f}-{g.m.max():.1f} min)', g)
             for d, g in df.groupby('decile')]
    return pd.DataFrame([dict(rides=len(g), coverage=100 * g.inside.mean(), width=g.width.mean()) for _, g in rows],
                        index=[r for r, _ in rows]).round(2)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('models', nargs='*', metavar='MODEL', help=f"models to train and score (default: all of {', '.join(MODELS)})")
    names = ap.parse_args().models or list(MODELS)
    if set(names) - set(MODELS): ap.error(f"unknown model {sorted(set(names) - set(MODELS))[0]!r}: use {', '.join(MODELS)}")
    with recorded():  # the output also goes to bench/RESULTS.md
        print(f'load average {os.getloadavg()}')
        months = {m: load(f'green:2021-{m}', progress=False)[0] for m in ('01', '02', '03')}
        print('| model | alpha | features | train RMSE | 2021-02 RMSE | 2021-02 RMSE no distance | 2021-02 MAE '
              '| 2021-02 R² '
              '| 2021-03 RMSE | 2021-03 RMSE no distance | 2021-03 coverage % | 2021-03 width min | fit s |')
        print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
        tables = {}
        for name in names:
            kind = MODELS[name]
            feats = featurize(months['01'], months['02'], kind)
            t0 = time.perf_counter()
            pipe, m, _ = fit_candidate(feats, name)
            fit = time.perf_counter() - t0
            mar = months['03']
            both = pd.concat([mar[RIDE_COLUMNS], mar[RIDE_COLUMNS].assign(trip_distance=np.nan)]) if kind == 'zones_time' \
                else mar[RIDE_COLUMNS]
            y = np.r_[mar.duration, mar.duration] if kind == 'zones_time' else mar.duration.to_numpy()
            p = predict(pipe, both)
            n = len(mar)
            nod = metrics(mar.duration, p.minutes[n:])['rmse'] if kind == 'zones_time' else float('nan')
            cov = interval_metrics(y, p.p10, p.p90)
            print(f"| {name} | {DEFAULT_ALPHA[name]} | {kind} | {m['train_rmse']:.4f} | {m['rmse']:.4f} | "
                  f"{m.get('rmse_no_distance', float('nan')):.4f} | {m['mae']:.4f} | {m['r2']:.4f} | "
                  f"{metrics(mar.duration, p.minutes[:n])['rmse']:.4f} | {nod:.4f} | {100 * cov['coverage_80']:.1f} | "
                  f"{cov['width_80']:.2f} | {fit:.1f} |", flush=True)
            tables[name] = coverage_table(y, p)
        for name, t in tables.items():
            print(f'\n80 % interval on 2021-03, {name} (calibrated on half of 2021-02):\n')
            print('| rides | n | coverage % | mean width min |\n|---|---|---|---|')
            for k, r in t.iterrows(): print(f"| {k} | {int(r.rides):,} | {r.coverage:.1f} | {r.width:.2f} |")
