"""Fitting a law to a runs table: ``dispatch.fit`` runs ``map``, ``laplace`` or ``nuts`` per target
(``options`` holds the method list and the sampler defaults)."""
