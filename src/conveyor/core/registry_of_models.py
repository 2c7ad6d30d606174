"""Imports every component's models so the metadata is complete (for Alembic and tests)."""

from __future__ import annotations

import importlib

from conveyor.core.db import COMPONENTS_WITH_TABLES


def import_all_models() -> None:
    for comp in COMPONENTS_WITH_TABLES:
        importlib.import_module(f"conveyor.{comp}.models")
