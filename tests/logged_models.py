"""Small models for tests, logged to a throw-away MLflow store: a real one (a linear model on a slice
of a real month, seconds to train) and hostile ones (a cloudpickle 'model' whose unpickling writes a
marker file; a skops model whose MLmodel file vouches for a type of its own)."""
import os
from pathlib import Path

import numpy as np

NAME = 'taxi-duration'


def real_rides(month: str = '01', n: int = 3000):
    "The first `n` prepared rides of a real 2021 green month (TAXI_DATA_DIR must hold it)."
    from taxi_duration.data import load
    df, _ = load(f'green:2021-{month}', progress=False)
    return df.iloc[:n]


def log_good(rides, experiment: str = 'tests') -> str:
    "Fit a linear model on `rides` with the project's featuriser, log it as the train step does; its model URI."
    import mlflow
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from taxi_duration.core import ensure_experiment
    from taxi_duration.features import make_featurizer
    from taxi_duration.rides import RIDE_COLUMNS
    from taxi_duration.train import SKOPS_TRUSTED
    pipe = Pipeline(list(make_featurizer('course').steps) + [('model', LinearRegression())])
    pipe.fit(rides[RIDE_COLUMNS], rides.duration)
    with mlflow.start_run(experiment_id=ensure_experiment(experiment)):
        info = mlflow.sklearn.log_model(pipe, name='model', serialization_format='skops',
                                        skops_trusted_types=SKOPS_TRUSTED, pip_requirements=['scikit-learn'])
    return info.model_uri


class Evil:
    "Unpickling this writes `marker`: any code could run instead."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (open, (self.marker, 'w'))


def log_evil(marker: Path, experiment: str = 'tests') -> str:
    "Log a cloudpickle 'model' whose loading creates `marker`; its model URI (the marker is removed after logging)."
    import mlflow
    with mlflow.start_run(experiment_id=_exp(experiment)):
        info = mlflow.sklearn.log_model(Evil(marker), name='model', serialization_format='cloudpickle',
                                        pip_requirements=['scikit-learn'])
    Path(marker).unlink(missing_ok=True)
    return info.model_uri


def own_type(X):
    "A function of the attacker's: not in the project's trusted types."
    return X


def log_untrusted_skops(rides, experiment: str = 'tests') -> str:
    "Log a skops model holding a function the project does not trust, its MLmodel vouching for it."
    import mlflow
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    X, y = rides[['trip_distance']].to_numpy(), rides.duration.to_numpy()
    pipe = Pipeline([('f', FunctionTransformer(own_type)), ('m', LinearRegression())]).fit(X, y)
    with mlflow.start_run(experiment_id=_exp(experiment)):
        info = mlflow.sklearn.log_model(pipe, name='model', serialization_format='skops',
                                        skops_trusted_types=[f'{__name__}.own_type'], pip_requirements=['scikit-learn'])
    return info.model_uri


def _exp(name):
    from taxi_duration.core import ensure_experiment
    return ensure_experiment(name)


def register(model_uri: str, alias: str = 'champion') -> str:
    "Register `model_uri` under NAME and give it `alias`; the version."
    import mlflow
    from mlflow import MlflowClient
    mv = mlflow.register_model(model_uri, NAME)
    MlflowClient().set_registered_model_alias(NAME, alias, mv.version)
    return str(mv.version)


def move_alias(version: str, alias: str = 'champion'):
    from mlflow import MlflowClient
    MlflowClient().set_registered_model_alias(NAME, alias, version)
