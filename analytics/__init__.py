"""The read side of Meterbook: the Parquet warehouse over the usage ledger, DuckDB connections
scoped to one workspace, and the sandbox that runs a user's SQL over them.

Nothing here writes the system of record. ``SqlError`` is the one error type this layer raises
for a user's query; engine services map it to the engine's own error tree.
"""

from __future__ import annotations


class SqlError(Exception):
    """A user's SQL was refused, failed or hit a limit; the message says which and what to do."""
