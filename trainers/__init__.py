"""Trainers: the plug-in contract (``trainers.base``) and built-in trainers.

This package imports nothing from ``planner``; the planner talks to trainers only through
``RunSpec`` and ``RunResult``.
"""
from trainers.base import RunResult, RunSpec, Trainer, TrainerLoadError, load_trainer

__all__ = ["RunSpec", "RunResult", "Trainer", "TrainerLoadError", "load_trainer"]
