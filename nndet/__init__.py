"""nndet: self-configuring object detection for 2D and 3D medical images.

The package is layered (see ``documentation/architecture.md``): ``cli`` on top, then
``training``, ``inference`` and ``preprocessing``, ``model`` and ``evaluation``, ``planning``,
and at the ground ``boxes`` and ``data``. A lower part never imports a higher one.
"""

from __future__ import annotations

__version__ = "0.1.0"
