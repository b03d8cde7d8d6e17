"""Errors of the tiny image builder, inside nubes' one exception tree.

NubesError (nubes.domain.errors)
└── TinyImageError          the build failed: the message says which step and why
    └── MissingTool         a host tool is absent; ``packages`` names the Debian packages
"""

from __future__ import annotations

from collections.abc import Sequence

from nubes.domain.errors import NubesError


class TinyImageError(NubesError):
    """Building the tiny guest image failed."""


class MissingTool(TinyImageError):
    """Host tools are missing; installing ``packages`` (Debian names) provides them."""

    def __init__(self, missing: Sequence[tuple[str, str]]) -> None:
        self.missing = tuple(missing)
        self.packages = tuple(sorted({package for _, package in self.missing}))
        what = ", ".join(f"{tool} (Debian package {package})" for tool, package in self.missing)
        super().__init__(
            f"the tiny image builder needs {what}; "
            f"install with: apt-get install {' '.join(self.packages)}"
        )
