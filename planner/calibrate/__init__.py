"""Calibration: learn the model discrepancy by holding out the largest scale (``heldout``) and
check predictions on held-out runs (``checks``)."""
