"""Signals of the tools app, for apps to its right (agents) to follow the catalog.

Both are sent inside the transaction of the change, so a receiver's writes commit or
roll back with it.
"""

from django.dispatch import Signal

# A sync folded a listed catalog into a server's entries. Arguments: ``server``,
# ``principal``.
catalog_applied = Signal()

# A person accepted a changed tool's new definition. Arguments: ``tool``, ``principal``.
tool_change_accepted = Signal()
