"""The data catalogue describes every table the models define, and nothing that is not one."""

from __future__ import annotations

from sqlmodel import SQLModel

import provisioner.store.db  # noqa: F401  (imports every module that defines tables, as the service does)
from provisioner.store.data_catalogue import CATALOGUE, described


def test_every_table_is_described() -> None:
    tables = set(SQLModel.metadata.tables)
    assert tables, "no table registered: the model modules were not imported"
    missing = tables - set(described())
    assert not missing, f"tables the data catalogue does not describe (add them to store/data_catalogue.py): {missing}"
    gone = set(described()) - tables
    assert not gone, f"the catalogue describes tables that no longer exist: {gone}"
    assert len(CATALOGUE) == len(described()), "a table is described twice"


def test_personal_fields_are_real_columns_and_entries_are_complete() -> None:
    for e in CATALOGUE:
        cols = set(SQLModel.metadata.tables[e.table].columns.keys())
        assert set(e.personal) <= cols, (e.table, set(e.personal) - cols)
        assert e.holds and e.retention and e.regenerated, e.table
