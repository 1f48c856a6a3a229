"""Thread priorities for the converter's helper threads.

On busy cores the encoder is the critical path; the source decoder has slack (it waits on
a full queue most of the time) and the parity decode only has to keep up. Lowering their
priority lets the encoder's row threads run first instead of stalling at sync points.
Codec threads that FFmpeg starts inherit the priority of the thread that opened the codec.
"""

from __future__ import annotations

import os
import threading

DECODE_NICE = 5
PARITY_NICE = 10


def lower_thread_priority(nice: int) -> None:
    """Set the calling thread's nice value (Linux threads have their own); no-op elsewhere."""
    if not nice:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: same result, a little slower


def run_in_thread(fn, *, name: str, nice: int) -> None:
    """Run ``fn`` to completion on a new thread at lower priority; re-raise what it raised."""
    errors: list[BaseException] = []

    def body() -> None:
        lower_thread_priority(nice)
        try:
            fn()
        except BaseException as e:  # re-raised in the caller below
            errors.append(e)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
