"""pheap's exceptions. Every engine error maps to one class; all derive from :class:`Error`.

Errors about a key or value that is too large are also ``ValueError``; a key holding another
kind of value than the operation needs is also ``TypeError``. I/O failures are ``OSError`` with
their ``errno`` (a missing heap opened with ``create=False`` is ``FileNotFoundError``).
"""

__all__ = [
    "Error",
    "CorruptError",
    "TruncatedError",
    "NotAHeapError",
    "VersionError",
    "BusyError",
    "TransactionError",
    "ReadOnlyError",
    "ReadersFullError",
    "ForkedError",
    "PoisonedError",
    "ClosedError",
    "RefusedError",
    "LockFileError",
    "CopyError",
    "UntrustedError",
    "UnsupportedValueError",
    "WrongKindError",
    "KeyTooLarge",
    "ValueTooLarge",
    "NestingTooDeep",
    "PublicationError",
    "CacheFullError",
]


class Error(Exception):
    """Base class of every pheap error."""


class CorruptError(Error):
    """A structure of the file (or a stored value) is damaged. Nothing was misread."""


class TruncatedError(CorruptError):
    """The file ends before a structure it must contain."""


class NotAHeapError(Error):
    """The file is not a pheap heap (wrong magic, or empty)."""


class VersionError(Error):
    """The file was written by a format version this build cannot read."""


class BusyError(Error):
    """Another writer holds the heap (``transaction(wait=False)``), or a reader pins a commit
    that a failed sync discarded: retry."""


class TransactionError(Error):
    """A transaction used wrongly: a second one on a thread that holds one, use from another
    thread, or use after an earlier operation of it failed."""


class ReadOnlyError(Error):
    """A write on a heap opened read-only, or on a snapshot."""


class ReadersFullError(Error):
    """Every reader slot is taken by a live snapshot."""


class ForkedError(Error):
    """A snapshot or transaction inherited through ``fork``: make a new one in the child."""


class PoisonedError(Error):
    """An earlier write or sync failed: reopen the heap (``pheap.open``) to continue."""


class ClosedError(Error):
    """The heap, snapshot or transaction was closed (or committed/aborted)."""


class RefusedError(Error):
    """A setup that would lose or corrupt data (hard link, replaced lock file, copy onto a heap
    in use) was refused."""


class LockFileError(Error):
    """The heap's lock file cannot be used."""


class CopyError(Error):
    """A copy did not hold every entry of its source and was not published."""


class UntrustedError(Error):
    """A pickle fragment on a heap opened with ``trusted=False``, or one that loads a global off
    the allowlist on a heap opened with ``trusted="safe"``."""


class UnsupportedValueError(Error):
    """A value the Python codec did not write (read it with ``codec="raw"``)."""


class WrongKindError(Error, TypeError):
    """The key holds another kind of value than the operation needs (a map where a value is
    expected, or the reverse)."""


class KeyTooLarge(Error, ValueError):
    """A key longer than ``pheap.MAX_KEY_LEN`` bytes once encoded."""


class ValueTooLarge(Error, ValueError):
    """A value longer than ``pheap.MAX_VALUE_LEN`` bytes once encoded."""


class NestingTooDeep(Error, ValueError):
    """Maps nested deeper than ``pheap.MAX_NESTING``."""


class PublicationError(Error):
    """A publication that cannot be used as it is: no manifest or a damaged one, a file it names
    missing, a download that does not match its size or digest (nothing is cached)."""


class CacheFullError(PublicationError, OSError):
    """The node cache has no room for a publication's file (``errno`` ENOSPC or EDQUOT)."""
