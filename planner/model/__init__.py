"""The model: the laws (pure JAX), the NumPyro model with its priors and run effects, the runs
table, the posterior container and the model-discrepancy term."""
