"""Data files that ship inside the package: the hardware profiles (`targets/`) and the calibration recipes
(`calibration/`). In a checkout both are links to the top-level folders, which stay the source of truth; a
built wheel holds copies. Read them through `importlib.resources` so either works."""

from importlib.resources import files
from importlib.resources.abc import Traversable


def resource(*parts: str) -> Traversable:
    return files(__name__).joinpath(*parts)
