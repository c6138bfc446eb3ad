"""User-facing errors: the CLI prints these as one clear line instead of a traceback."""


class PagError(Exception):
    """An error caused by the user's input, data or environment, with a message that says
    which file, key or value is wrong and what was expected."""


class DataError(PagError):
    """A dataset file is missing, corrupt, or not in the expected format."""


class DataMissing(DataError):
    """A dataset that is not there (not generated, fetched or installed yet): `what` is
    missing and a general `hint`; commands that know the profile replace the hint with the
    command that makes it for that profile."""

    def __init__(self, what: str, hint: str):
        super().__init__(f"{what}; {hint}")
        self.what, self.hint = what, hint


class ChecksumError(DataError):
    """A file's size or digest differs from the recorded one."""


class DownloadError(PagError):
    """A download could not be completed (no network, HTTP error, manual dataset)."""


class UnsafeArchiveError(DataError):
    """An archive member would land outside the extraction target."""
