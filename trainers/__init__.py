"""Trainers: the plug-in contract (``trainers.base``) and built-in trainers.

This package imports nothing from ``planner``; the planner talks to trainers only through
``RunSpec`` and ``RunResult``.
"""
from trainers.base import (
    RunContext,
    RunResult,
    RunSpec,
    Trainer,
    TrainerLoadError,
    load_trainer,
    run_context,
)

__all__ = ["RunContext", "RunResult", "RunSpec", "Trainer", "TrainerLoadError", "load_trainer",
           "run_context"]
