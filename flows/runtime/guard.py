"""Trap 2 of running on Dask: its worker processes start with ``spawn``, which re-imports
the main script, so a script that starts a cluster outside ``if __name__ == "__main__":``
would start one in every worker too. That is refused with a `ConfigError` saying so, in the
script itself and again (in case the first check cannot see the call) in any child still
importing it. Ray's workers do not import the main script, so a Ray run needs no guard.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import sys


from tasks.errors import ConfigError


_GUARD = (
    "run.task_runner {kind!r} starts worker processes, which re-import the main script: put "
    "the code that runs the pipeline under `if __name__ == \"__main__\":` in {script}"
)


def _refuse_unguarded(kind: str) -> None:
    """Refuse to start worker processes from code the workers would run again."""
    main = sys.modules.get("__main__")
    # A child still importing the main script has no __file__ yet; its argv is the parent's.
    script = getattr(main, "__file__", None) or (
        sys.argv[0] if sys.argv and os.path.isfile(sys.argv[0]) else "the main script")
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # A spawned child is importing the main script, which starts a cluster again.
        raise ConfigError(_GUARD.format(kind=kind, script=script))
    if kind == "dask" and _dask_spawns() and _called_from_unguarded_main(main):
        raise ConfigError(_GUARD.format(kind=kind, script=script))


def _dask_spawns() -> bool:
    import dask

    # A user's setting is read with Dask's config; "spawn" is distributed's default.
    return dask.config.get("distributed.worker.multiprocessing-method", "spawn") != "fork"


def _called_from_unguarded_main(main) -> bool:
    """True when the main script's top-level code is running this call outside a guard.

    Only answers True when sure: with no script file (REPL, notebook, ``-c``), a call from a
    function called later (a thread, a console script's ``main()``), or an unreadable file,
    spawned children do not re-run the call, or we cannot tell.
    """
    path = getattr(main, "__file__", None)
    if not path:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is vars(main) \
                and frame.f_code.co_filename == path:
            break
        frame = frame.f_back
    if frame is None:
        return False
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return False
    line = frame.f_lineno
    return not any(isinstance(node, ast.If) and _is_main_test(node.test)
                   and node.body[0].lineno <= line <= (node.body[-1].end_lineno or line)
                   for node in ast.walk(tree))


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and any(
        isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
