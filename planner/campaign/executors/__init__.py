"""Executors run trainers for a campaign: ``ray`` (embedded or a cluster) or ``inprocess``."""
from __future__ import annotations

import os

from planner.campaign.executors.base import (
    Executor,
    check_trainer_importable,
    ensure_cwd_on_path,
)
from planner.campaign.executors.inprocess import InProcessExecutor
from planner.campaign.executors.ray import RayExecutor
from planner.core.errors import InputError
from trainers.base import TrainerLoadError


def make_executor(cfg, campaign_dir=None) -> Executor:
    """The executor a campaign config asks for (TrainerLoadError -> InputError). Trainers see
    ``campaign_dir`` (made absolute) in ``trainers.base.run_context()``."""

    ex = cfg.executor
    campaign_dir = None if campaign_dir is None else os.path.abspath(campaign_dir)
    ensure_cwd_on_path()
    try:
        if ex.kind == "inprocess":
            return InProcessExecutor(cfg.trainer.path, dict(cfg.trainer.args), threads=ex.threads,
                                     timeout_s=ex.timeout_s, campaign_dir=campaign_dir)
        # check the trainer path here, where the error is cheap to report (the module must also
        # be importable on every worker)
        check_trainer_importable(cfg.trainer.path)
        return RayExecutor(cfg.trainer.path, dict(cfg.trainer.args), address=ex.address,
                           num_cpus_per_run=ex.num_cpus_per_run,
                           num_gpus_per_run=ex.num_gpus_per_run, max_retries=ex.max_retries,
                           timeout_s=ex.timeout_s,
                           runtime_env=dict(ex.runtime_env) if ex.runtime_env else None,
                           campaign_dir=campaign_dir)
    except TrainerLoadError as e:
        raise InputError(str(e)) from None
