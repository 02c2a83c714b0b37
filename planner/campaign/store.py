"""Opening a campaign directory: create it with its ledger and resolved config, or reopen it and
check that the config has not changed (operational keys excepted)."""
from __future__ import annotations

from pathlib import Path

from planner.campaign.journal import JournalLog
from planner.campaign.ledger import Ledger
from planner.campaign.observations import (
    prepare_observations,
    read_prior_runs,
    record_observations,
)
from planner.campaign.planner import POSTERIORS, RECOMMENDATION
from planner.campaign.records import LEDGER_NAME
from planner.config.parse import coerce_config, config_from_dict
from planner.config.schema import CampaignConfig
from planner.config.store import (
    config_diff,
    config_fingerprint,
    config_to_dict,
    config_to_yaml,
    resume_blockers,
)
from planner.core.errors import InputError, LedgerError
from planner.core.io import write_text_atomic

log = JournalLog("planner.campaign")


RESOLVED_CONFIG = "config.resolved.yaml"


# --------------------------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------------------------
def _refuse_damaged(d: Path) -> None:
    leftovers = [n for n in (RESOLVED_CONFIG, POSTERIORS, RECOMMENDATION, LEDGER_NAME + "-wal")
                 if (d / n).exists()]
    if leftovers:
        raise LedgerError(f"{d} looks like a campaign directory whose ledger ({LEDGER_NAME}) is "
                          f"missing (found {', '.join(leftovers)}); refusing to start a new "
                          f"campaign over it: use a new --out directory")
    if d.exists() and not d.is_dir():
        raise InputError(f"campaign directory {d} exists and is not a directory")


def stored_config(ledger: Ledger) -> CampaignConfig:
    raw, _ = ledger.config()
    return config_from_dict(raw, check_files=False)


def open_campaign(config, out: str | Path) -> tuple[CampaignConfig, Ledger]:
    """Create the campaign in ``out`` or reopen it (locked for writing).

    Reopening with a config whose science differs from the stored one raises LedgerError naming
    the differing keys; a change confined to ``executor`` and ``max_failure_fraction``
    (planner.config.store.ADJUSTABLE_KEYS) is recorded and accepted."""
    cfg = coerce_config(config)
    d = Path(out)
    new = config_to_dict(cfg)
    fp = config_fingerprint(cfg)
    prior = None  # a bad prior_runs table fails here, before anything is created
    prior_label = f"prior_runs table {cfg.prior_runs}"
    if cfg.prior_runs:
        prior = prepare_observations(cfg, read_prior_runs(cfg), "imported", prior_label)
    if Ledger.exists(d):
        ledger = Ledger.open(d)
        try:
            stored, stored_fp = ledger.config()
            diff = resume_blockers(stored, new)
            if stored_fp != fp and (diff or stored == new):
                raise LedgerError(
                    f"campaign {d} was started with a different config (differs in "
                    f"{', '.join(diff[:6]) or 'content'}); rerun with its original config "
                    f"(saved as {d / RESOLVED_CONFIG}) or use a new --out directory")
            if stored != new or stored_fp != fp:
                ledger.update_config(new, fp, config_diff(stored, new))
                write_text_atomic(d / RESOLVED_CONFIG, config_to_yaml(cfg))
        except BaseException:
            ledger.close()
            raise
    else:
        _refuse_damaged(d)
        for suffix in ("", "-wal", "-shm", "-journal"):  # an interrupted creation
            Path(str(d / LEDGER_NAME) + ".new" + suffix).unlink(missing_ok=True)
        ledger = Ledger.create(d, new, fp)
        write_text_atomic(d / RESOLVED_CONFIG, config_to_yaml(cfg))
    if prior is not None:
        try:
            n = record_observations(ledger, prior, "imported", prior_label)
            if n["added"]:
                log.info("imported %d prior run(s) from %s", n["added"], cfg.prior_runs)
        except BaseException:
            ledger.close()
            raise
    return cfg, ledger


def open_existing(campaign_dir: str | Path, config=None) -> tuple[CampaignConfig, Ledger]:
    """Open a campaign for writing; with ``config``, create it if it does not exist yet."""
    d = Path(campaign_dir)
    if config is not None:
        return open_campaign(config, d)
    ledger = Ledger.open(d)
    try:
        return stored_config(ledger), ledger
    except BaseException:
        ledger.close()
        raise
