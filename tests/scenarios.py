"""The breakage the monitoring tests rehearse, each built from a real month's raw rows (`nbs/09_verdicts.ipynb`
loads this file to measure the thresholds with it). Test data, not part of the library."""
import numpy as np
import pandas as pd

from taxi_duration.rides import ZONE_MAX, ZONE_MIN, ZONES

SCENARIOS = {
    'km': 'trip_distance arrives in kilometres instead of miles',
    'zones_constant': 'the zone feed is stuck: every ride in zone 264 (unknown)',
    'zones_scrambled': 'the zone feed maps ids wrongly (a fixed random permutation)',
    'missing': '5 % of trip distances and pickup zones are missing',
    'utc_clock': 'pickup and drop-off times arrive in UTC instead of New York time',
    'long_rides': 'only the longest 60 % of rides arrive (a filter broke upstream)',
    'slower': 'every ride takes 1.5 times as long (the city slowed down; the inputs did not change)',
}


def make_scenario(raw: pd.DataFrame, name: str, seed: int = 0) -> pd.DataFrame:
    "Raw rides (data.read_trips) broken the way `name` says; 'slower:1.2' sets the factor."
    base, _, arg = name.partition(':')
    if base not in SCENARIOS: raise ValueError(f"unknown scenario {name!r}: use one of {', '.join(SCENARIOS)}")
    df, rng = raw.copy(), np.random.default_rng(seed)
    if base == 'km': df['trip_distance'] = df.trip_distance * 1.609344
    elif base == 'zones_constant': df['PULocationID'] = 264; df['DOLocationID'] = 264
    elif base == 'zones_scrambled':
        ids = np.arange(ZONE_MIN, ZONE_MAX + 1)
        perm = dict(zip(ids.tolist(), rng.permutation(ids).tolist()))
        for z in ZONES: df[z] = df[z].map(perm)
    elif base == 'missing':
        df['trip_distance'] = df.trip_distance.astype(float).where(rng.random(len(df)) >= 0.05)
        df['PULocationID'] = df.PULocationID.astype('Int64').where(rng.random(len(df)) >= 0.05)
    elif base == 'utc_clock':
        for c in ('pickup_datetime', 'dropoff_datetime'): df[c] = df[c] + pd.Timedelta(hours=5)
    elif base == 'long_rides': df = df[df.trip_distance > df.trip_distance.quantile(0.4)]
    elif base == 'slower':
        f = float(arg or 1.5)
        df['dropoff_datetime'] = df.pickup_datetime + (df.dropoff_datetime - df.pickup_datetime) * f
    return df.reset_index(drop=True)
