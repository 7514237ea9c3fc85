"""What a plugin needs beyond agents and sensors: the public toolkit for plugin authors.

Everything here is stable API; a plugin imports only from ``flyteagents``,
``flyteagents.sensor``, ``flyteagents.testing`` and this module, never from a
``flyteagents._*`` module. See docs/writing-a-plugin.md.

- :class:`ClientPool`: SDK clients and sessions kept per event loop and key, closed
  when their loop (a local run's, or the service's) ends; :func:`close_clients` closes
  a loop's clients at once.
- :func:`run_sync`: run a blocking call off the event loop, on the bounded thread pool.
- :func:`default_sync_workers`: that pool's size, to size a client's connection pool to it.
- :func:`get_secret`, :func:`check_secret_name`, :func:`secret_fingerprint`: read secrets
  by name, check names taken from a task, key clients by a secret without holding it.
- :func:`task_execution_id`: a stable name for one attempt of one task execution, for
  idempotent job submission.
- :func:`whole_numbers_as_int`: undo protobuf Struct's float-only numbers in a template's
  ``custom``.
- :func:`import_object`: import ``"module:Name"`` with a clear InvalidTaskError.
"""

from ._models import task_execution_id, whole_numbers_as_int
from ._pool import ClientPool, close_clients
from ._registry import import_object
from ._runner import default_sync_workers, run_sync
from ._secrets import check_secret_name, get_secret, secret_fingerprint

__all__ = [
    "ClientPool",
    "check_secret_name",
    "close_clients",
    "default_sync_workers",
    "get_secret",
    "import_object",
    "run_sync",
    "secret_fingerprint",
    "task_execution_id",
    "whole_numbers_as_int",
]

# Show flyteagents.plugin.ClientPool, not flyteagents._pool.ClientPool, in reprs and docs
# (get_secret is flyteagents.get_secret already).
_OWN = (ClientPool, check_secret_name, close_clients, default_sync_workers, import_object, run_sync)
for _obj in (*_OWN, secret_fingerprint, task_execution_id, whole_numbers_as_int):
    _obj.__module__ = __name__
del _obj, _OWN
