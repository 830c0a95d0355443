"""Say what a slow stop waits on.

After SIGTERM meshd cancels everything and normally stops within a few
seconds (each part bounds its own goodbye: the p2p host 3 s, plugins 5 s,
the API 1 s). When it does not, an operator (or a supervisor about to
SIGKILL it) saw nothing after "shutting down". :func:`report_slow_stop` runs
as a trio system task from the moment the stop begins: if meshd is still
running after REPORT_AFTER seconds, it logs a warning naming every trio task
still running and the line it waits at, and again every REPORT_EVERY seconds.
It is cancelled with the run when the stop completes.
"""

from __future__ import annotations

import logging
import os

import trio

log = logging.getLogger(__name__)

REPORT_AFTER = 5.0
REPORT_EVERY = 10.0
FRAMES_SHOWN = 3  # innermost frames of each waiting task


def waiting_tasks() -> list[str]:
    """Every running trio task without children (but this one and trio's own),
    with where it waits: its innermost frames outside trio, innermost last."""
    found: list[str] = []
    me = trio.lowlevel.current_task()

    def walk(task: trio.lowlevel.Task) -> None:
        children = [child for nursery in task.child_nurseries for child in nursery.child_tasks]
        if not children and task is not me and not task.name.startswith("<"):
            frames = [f"{os.path.basename(frame.f_code.co_filename)}:{line} "
                      f"{frame.f_code.co_name}" for frame, line in task.iter_await_frames()
                      if os.sep + "trio" + os.sep not in frame.f_code.co_filename]
            found.append(f"{task.name} at {' > '.join(frames[-FRAMES_SHOWN:]) or '?'}")
        for child in children:
            walk(child)

    root = trio.lowlevel.current_root_task()
    if root is not None:  # None only outside trio.run
        walk(root)
    return found


async def report_slow_stop(after: float = REPORT_AFTER, every: float = REPORT_EVERY) -> None:
    """Log what the stop waits on after ``after`` s, then every ``every`` s."""
    await trio.sleep(after)
    waited = after
    while True:
        tasks = waiting_tasks()
        log.warning("still stopping: these tasks have not ended",
                    extra={"seconds": round(waited), "tasks": tasks})
        await trio.sleep(every)
        waited += every
