"""Awaiting concurrent work so that its failure, or its cancellation, leaves nothing running.

A transfer runs many file copies at once; when one fails, the others are
cancelled, and the clean-up that follows (removing a folder in tmp/) must
wait for every one to have ended, threads included.
"""

from __future__ import annotations

import asyncio
from typing import Iterable

from raffinerie.errors import RaffError


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The exception that stands for a group: a RaffError (a full local disk) before the others."""
    leaves = []

    def walk(g: BaseExceptionGroup) -> None:
        for exc in g.exceptions:
            walk(exc) if isinstance(exc, BaseExceptionGroup) else leaves.append(exc)
    walk(group)
    return next((e for e in leaves if isinstance(e, RaffError)), leaves[0])


async def all_or_first(coros: Iterable) -> list:
    """Run `coros` together; the first failure cancels the rest and is raised as itself
    (every one has ended when this returns, so nothing writes into a folder being removed)."""
    tasks = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as failed:
        raise first_error(failed) from None
    return [task.result() for task in tasks]


async def to_the_end(future: asyncio.Future):
    """Await a thread's work; cancelled, wait for the thread all the same. A cancelled task cannot
    stop its thread: a write would go on after the task's clean-up removed its folder in tmp/,
    and make it again."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation, not this, is what goes on
        raise


async def quietly(coro) -> None:
    """Await a clean-up to its end, even in a task being cancelled (when another entry's push
    failed, its TaskGroup cancels this one while it may be removing its folder in tmp/);
    its failure does not hide the error being handled, and a cancellation goes on after it."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            break
    if cancelled:
        raise asyncio.CancelledError
