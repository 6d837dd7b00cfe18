"""A compiled call that holds the GIL for seconds, run in a forked child so that Cancel still works.

Some compiled extensions (fast_simplification's quadric decimation: 1-4 s on a 972k-face mesh)
never release the GIL, so no other Python thread runs while they do, and a host's Cancel check
(ComfyUI raises from its progress callback) waits until they return. ``call_in_child`` runs such a
call in a forked child process while this one calls ``poll()`` every ``interval`` seconds; when
``poll`` raises, the child is killed and the exception propagates at once.

Fork copies nothing up front (copy on write), so the arguments are not sent; only the result is
pickled back. The child runs the call and pickling only: no CUDA, no locks other threads of the
parent might hold. Where fork does not exist (Windows) the call runs inline.
"""
from __future__ import annotations

import multiprocessing
import pickle
from typing import Any, Callable, Optional

__all__ = ["call_in_child"]


def _child(connection, fn: Callable, args: tuple, kwargs: dict) -> None:
    try:
        result = (True, fn(*args, **kwargs))
    except BaseException as error:  # the parent re-raises it
        result = (False, error)
    try:
        connection.send(result)
    except (pickle.PicklingError, TypeError, AttributeError):  # an exception that does not pickle
        connection.send((False, RuntimeError(repr(result[1]))))
    connection.close()


def call_in_child(fn: Callable, args: tuple = (), kwargs: Optional[dict] = None,
                  poll: Optional[Callable[[], Any]] = None, interval: float = 0.2):
    """``fn(*args, **kwargs)``, in a forked child when ``poll`` is given (inline otherwise, or
    without fork). ``poll()`` runs every ``interval`` seconds until the result arrives; an
    exception from it kills the child and propagates. An exception of ``fn`` is re-raised here.
    The result must pickle."""
    kwargs = kwargs or {}
    if poll is None or "fork" not in multiprocessing.get_all_start_methods():
        return fn(*args, **kwargs)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, fn, args, kwargs), daemon=True)
    process.start()
    sender.close()
    try:
        while not receiver.poll(interval):
            poll()
            if not process.is_alive() and not receiver.poll():
                raise RuntimeError(f"{getattr(fn, '__name__', fn)}: the child process died "
                                   f"(exit code {process.exitcode})")
        ok, value = receiver.recv()
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receiver.close()
    if not ok:
        raise value
    return value
