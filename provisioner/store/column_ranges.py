"""What the database's columns can hold, for the edges to bound their input by.

Ids, sequence numbers and counts are INTEGER columns: 32-bit on PostgreSQL (2^31 - 1 at most; a
larger parameter is a DataError), 64-bit on SQLite (a Python int beyond that cannot even be bound).
The narrower one is the service's range, so both backends refuse the same input the same way."""

from __future__ import annotations

INT_COLUMN_MAX = 2**31 - 1
