"""EM models: finite mixtures (with their gating and seeding)."""

from ._mixture import Mixture as Mixture
from ._mixture import MixtureParams as MixtureParams
from ._mixture import MixtureStats as MixtureStats
from ._gating import ConstantGating as ConstantGating
from ._gating import Gating as Gating
