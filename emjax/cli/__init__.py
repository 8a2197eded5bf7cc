"""The command line: ``emjax demo``, ``emjax fit``, ``emjax select`` and ``emjax predict``
(CSV in; a model file, JSON, CSV and dependency-free SVG plots out). See ``emjax --help``."""

from ._main import main as main
