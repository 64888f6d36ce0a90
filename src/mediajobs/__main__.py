from __future__ import annotations

from mediajobs.cli import main

if __name__ == "__main__":  # not again in a spawned child (the imaging processes)
    raise SystemExit(main())
