"""fabns: Fabric connections that run inside Linux namespaces and containers.

.. versionadded:: 0.1
"""

from fabns.config import Config
from fabns.connection import NamespaceConnection
from fabns.errors import (
    AmbiguousContainer,
    ConfigError,
    ContainerNotFound,
    ContainerStopped,
    ElevationRequired,
    EngineUnavailable,
    EntryFailed,
    HelperError,
    InvalidArgument,
    NamespaceError,
    NotALeader,
    NotImplementedYet,
    PermissionDenied,
    SessionLost,
    TargetChanged,
    TargetExited,
    TargetNotFound,
    ToolMissing,
    TransferFailed,
    UnknownUser,
)
from fabns.group import NamespaceGroup, ThreadingNamespaceGroup

__version__ = "0.1.0"

__all__ = [
    "AmbiguousContainer",
    "Config",
    "ConfigError",
    "ContainerNotFound",
    "ContainerStopped",
    "ElevationRequired",
    "EngineUnavailable",
    "EntryFailed",
    "HelperError",
    "InvalidArgument",
    "NamespaceConnection",
    "NamespaceError",
    "NamespaceGroup",
    "NotALeader",
    "NotImplementedYet",
    "PermissionDenied",
    "SessionLost",
    "TargetChanged",
    "TargetExited",
    "TargetNotFound",
    "ThreadingNamespaceGroup",
    "ToolMissing",
    "TransferFailed",
    "UnknownUser",
    "__version__",
]
