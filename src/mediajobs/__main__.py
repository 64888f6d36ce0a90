"""``python -m mediajobs`` and the ``mediajobs`` command."""

from __future__ import annotations


def run() -> int:
    """The command's entry point: ``mediajobs.cli.main``. A Ctrl-C that lands outside a
    command's own signal handling (while modules load, while a command starts or closes)
    ends the process quietly with the shell's code for it, 130 (128 + SIGINT), instead of
    a ``KeyboardInterrupt`` traceback. (Commands that run until stopped handle Ctrl-C
    themselves and shut down in order.)"""
    try:
        from mediajobs.cli import main  # imported here: an interrupt while loading counts

        return main()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # not again in a spawned child (the imaging processes)
    raise SystemExit(run())
