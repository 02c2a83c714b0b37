"""Deciding: the target decision (optimum over the simplex), the candidate space, the strategies
that propose runs (random, grid, decision) and their registry."""
