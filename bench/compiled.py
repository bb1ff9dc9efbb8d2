"""The logged tree model in a compiled runtime (treelite's GTIL), measured, not wired in.

    .venv/bin/python bench/compiled.py      # needs: pip install treelite  (4.8 here)

Fits the default model on green 2021-01 (same calls as the pipeline), converts its HistGradientBoostingRegressor
with treelite.sklearn.import_model, checks the predictions equal on every 2021-02 ride with and without its
distance, and times one ride and a 10,000-ride batch, one thread, both runtimes in the same run (compare ratios;
the load average is printed). The MLflow model stays the one source of truth: the treelite model is derived
from it at load time, never logged separately. Data: $TAXI_DATA_DIR, else ../shared/data.
"""
from results import recorded  # bench/results.py
import os, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault('TAXI_DATA_DIR', str(ROOT.parent / 'shared' / 'data'))
import numpy as np
from threadpoolctl import threadpool_limits
import treelite, treelite.gtil, treelite.sklearn
from taxi_duration.data import load
from taxi_duration.features import featurize, mask_distance
from taxi_duration.train import fit_candidate


def per_call_ms(fn, n: int) -> float:
    "Median of 3 runs of n calls, ms a call."
    out = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n): fn()
        out.append((time.perf_counter() - t0) / n * 1e3)
    return float(np.median(out))


if __name__ == '__main__':
    with recorded():  # the output also goes to bench/RESULTS.md
        threadpool_limits(1)  # as in the service's workers
        tr, va = (load(f'green:2021-{m}', progress=False)[0] for m in ('01', '02'))
        feats = featurize(tr, va)
        pipe, _, _ = fit_candidate(feats, 'gbm')
        hgb = pipe[-1].estimator_
        compiled = treelite.sklearn.import_model(hgb)
        X = np.vstack([feats['X_validation'], mask_distance(feats['X_validation'])])
        diff = np.abs(hgb.predict(X) - treelite.gtil.predict(compiled, X).ravel()).max()
        print(f'{len(X):,} rides (2021-02, with and without distance): max |hgb - treelite| = {diff:.2e} min')
        print(f'load average before timing {os.getloadavg()}')
        one, batch = X[:1], X[:10_000]
        rows = [('HistGradientBoosting predict', lambda: hgb.predict(one), lambda: hgb.predict(batch)),
                ('treelite GTIL predict', lambda: treelite.gtil.predict(compiled, one),
                 lambda: treelite.gtil.predict(compiled, batch))]
        print('| runtime | one ride, ms | 10,000 rides, ms |\n|---|---|---|')
        for name, a, b in rows: print(f'| {name} | {per_call_ms(a, 300):.3f} | {per_call_ms(b, 2):.1f} |')
        print(f'load average after timing {os.getloadavg()}')
