"""Task types: importing this package registers every type module in it."""

import importlib
import pkgutil

from .base import (
    QUEUE_LONG,
    QUEUE_SHORT,
    JobContext,
    TaskInterrupted,
    TaskType,
    TransientError,
    all_types,
    find,
    get,
    names,
    register,
    worker_type_names,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "QUEUE_LONG",
    "QUEUE_SHORT",
    "JobContext",
    "TaskInterrupted",
    "TaskType",
    "TransientError",
    "all_types",
    "find",
    "get",
    "names",
    "register",
    "worker_type_names",
]
