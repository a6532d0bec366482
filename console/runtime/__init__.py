"""Runtimes the console can run on; see ``console.runtime.base``."""

from console.runtime.base import (
    Capabilities,
    CommandError,
    Runtime,
    RuntimeDisconnected,
    RuntimeKind,
    RuntimeProblem,
    RuntimeUnavailable,
)

__all__ = [
    "Capabilities",
    "CommandError",
    "Runtime",
    "RuntimeDisconnected",
    "RuntimeKind",
    "RuntimeProblem",
    "RuntimeUnavailable",
]
