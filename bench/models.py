"""The README's results table: every model, trained on green 2021-01, scored on 2021-02 and 2021-03.

    .venv/bin/python bench/models.py

Uses the same library calls as the pipeline's steps (featurize -> fit_candidate), in process and
without MLflow, so the figures are the model's alone. Data: $TAXI_DATA_DIR, else ../shared/data.
"""
import os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault('TAXI_DATA_DIR', str(ROOT.parent / 'shared' / 'data'))
from taxi_duration.data import load
from taxi_duration.features import RIDE_COLUMNS
from taxi_duration.train import MODELS, DEFAULT_ALPHA, featurize, fit_candidate, metrics

months = {m: load(f'green:2021-{m}', progress=False)[0] for m in ('01', '02', '03')}
print(f"| model | alpha | features | train RMSE | 2021-02 RMSE | 2021-02 MAE | 2021-02 R² | 2021-03 RMSE | fit s |")
print('|---|---|---|---|---|---|---|---|---|')
for name, kind in MODELS.items():
    feats = featurize(months['01'], months['02'], kind)
    t0 = time.perf_counter()
    pipe, m, _ = fit_candidate(feats, name)
    fit = time.perf_counter() - t0
    march = metrics(months['03'].duration, pipe.predict(months['03'][RIDE_COLUMNS]))
    print(f"| {name} | {DEFAULT_ALPHA[name]} | {kind} | {m['train_rmse']:.4f} | {m['rmse']:.4f} | {m['mae']:.4f} | "
          f"{m['r2']:.4f} | {march['rmse']:.4f} | {fit:.1f} |")
