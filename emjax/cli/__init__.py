"""The command line (``emjax demo``, ``emjax fit``) and its dependency-free SVG plots."""

from ._main import main as main
