"""SQL state: tables, sessions, migrations, compare-and-swap and the event outbox.

The store is the single source of truth. It knows nothing of HTTP or of policy.
"""

from nubes.store.db import Database

__all__ = ["Database"]
