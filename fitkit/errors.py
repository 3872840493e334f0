"""Exceptions raised by fitkit. Each message names the file or argument at fault."""


class FitkitError(Exception):
    """Base class of fitkit's own errors."""


class ModelFileError(FitkitError, ValueError):
    """A body-model or weight file is missing, unreadable, corrupt or unsafe."""


class ParameterError(FitkitError, ValueError):
    """A parameter tensor has the wrong shape, dtype or values."""


class ObservationError(FitkitError, ValueError):
    """Image observations (keypoints, image sizes, cameras) or their file are invalid."""


class ObservationWarning(UserWarning):
    """Observations were repaired on load (e.g. NaN keypoints set to confidence 0)."""
