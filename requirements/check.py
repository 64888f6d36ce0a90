"""Exit 1, naming what is missing, when the installed packages do not satisfy what
pyproject.toml asks of mediajobs (its dependencies and the extras named on the command
line): the lock files are out of date, and `make lock` brings them up to date.

`pip check` alone would not see a dependency added to an extra (``dev``, ``bench``)."""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement


def unmet(extras: list[str]) -> list[str]:
    """The requirements of mediajobs (with ``extras``) that the environment does not meet."""
    problems = []
    for text in metadata.requires("mediajobs") or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker and not any(marker.evaluate({"extra": extra}) for extra in ["", *extras]):
            continue  # another extra's, or not for this Python
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement.name}: not installed (wanted {requirement})")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}: {version} installed (wanted {requirement})")
    return problems


if __name__ == "__main__":
    if problems := unmet(sys.argv[1:]):
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
