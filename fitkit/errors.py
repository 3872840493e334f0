"""Exceptions raised by fitkit. Each message names the file or argument at fault."""


class FitkitError(Exception):
    """Base class of fitkit's own errors."""


class ModelFileError(FitkitError, ValueError):
    """A body-model or weight file is missing, unreadable, corrupt or unsafe."""


class ParameterError(FitkitError, ValueError):
    """A parameter tensor has the wrong shape, dtype or values."""
