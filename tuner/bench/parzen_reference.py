#!/usr/bin/env python3
"""Reference log-densities of Optuna 5.0.0's Parzen estimator, pasted into
tuner/src/sampler/tpe.rs (test `parzen_log_pdf_matches_optuna`).

    /work/venv-bench/bin/python tuner/bench/parzen_reference.py

Optuna 5.0 evaluates a log-scale parameter's kernel in ln(x), as we do, so its log_pdf values
compare directly (the "optuna" column). Observations have no ties within a dimension: the
neighbour bandwidths of tied values depend on numpy's (unstable) argsort order.
"""
import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
from optuna.samplers._tpe.sampler import default_weights

space = {
    "x": FloatDistribution(-5.0, 10.0),
    "lr": FloatDistribution(1e-5, 1.0, log=True),
    "k": IntDistribution(1, 8),
    "c": CategoricalDistribution(["a", "b", "c"]),
}
obs = {
    "x": np.array([0.5, 2.0, -3.0, 7.5, 1.0]),
    "lr": np.array([1e-3, 1e-2, 1e-4, 0.5, 3e-3]),
    "k": np.array([2.0, 4.0, 5.0, 8.0, 1.0]),  # no ties: numpy argsort breaks them arbitrarily
    "c": np.array([0.0, 1.0, 1.0, 2.0, 0.0]),  # choice indices
}
params = _ParzenEstimatorParameters(prior_weight=1.0, consider_magic_clip=True, consider_endpoints=False,
                                    weights=default_weights, multivariate=True)
pe = _ParzenEstimator(obs, space, params)
queries = {
    "x": np.array([0.7, -4.9, 9.0]),
    "lr": np.array([2e-3, 1e-5, 0.9]),
    "k": np.array([2.0, 1.0, 8.0]),
    "c": np.array([0.0, 2.0, 1.0]),
}
lp = pe.log_pdf(queries)
for i in range(3):
    print(f"query {i}: optuna {float(lp[i])!r}")
