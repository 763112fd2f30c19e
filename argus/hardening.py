"""Process hardening applied to every Argus process at start-up."""

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4


def libc() -> ctypes.CDLL:
    """The C library, for ``prctl`` (Linux)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def forbid_inspection() -> bool:
    """Make this process non-dumpable (Linux): its ``/proc/<pid>/environ``, memory and
    file descriptors become unreadable to other processes of the same user, such as
    the stdio MCP servers it starts (which could otherwise read the secrets in its
    environment). Core dumps are off too. Children that exec start dumpable again.

    Returns whether it took effect; elsewhere it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except OSError:
        logger.warning("could not make the process non-dumpable", exc_info=True)
        return False
