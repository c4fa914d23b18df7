"""Server files in a sandbox: the Annotate tab reads server paths only under configured roots.

On a public page any visitor can call the queue endpoint with any text, so a server path is
resolved (``..`` and every symlink followed) and must land inside one of the ``--data-root``
folders; there are none by default. Every refusal has the same words whether the path is
missing, a directory, unreadable or outside the roots, so the answers reveal nothing about what
exists on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

REFUSED = ("not a readable server path (only admins can queue server files, and only under the folders "
           "the server's owner opened with --data-root); upload the files instead")


class PathRefused(ValueError):
    """A server path outside the sandbox (or one that cannot be resolved); the message is always ``REFUSED``."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


class DataRoots:
    """The folders server-side sources may come from; an empty set refuses every path."""

    def __init__(self, roots: Iterable[str | os.PathLike] = ()) -> None:
        self.roots = tuple(Path(root).expanduser().resolve() for root in roots)

    def __bool__(self) -> bool:
        return bool(self.roots)

    def check(self, path: str | os.PathLike, base: Path | None = None) -> Path:
        """The real path of ``path`` (relative ones from ``base``, else the first root) if it exists
        inside a root; otherwise ``PathRefused``."""
        if not self.roots:
            raise PathRefused()
        try:
            candidate = Path(path)
            if not candidate.is_absolute():
                candidate = (base or self.roots[0]) / candidate
            resolved = candidate.resolve(strict=True)
        except (OSError, ValueError, RuntimeError):  # missing, a symlink loop, a NUL byte, no permission
            raise PathRefused() from None
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise PathRefused()
        return resolved


NO_ROOTS = DataRoots()
