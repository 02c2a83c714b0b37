"""Campaigns: the ledger, the executors, the ask/tell planner, the driver loop, and the functions
behind ``planner run / status / suggest / tell / runs`` (``planner.campaign.campaign``)."""
