"""EM algorithms as pure ``init`` / ``step`` pairs."""

from ._base import Algorithm as Algorithm
from ._base import AlgorithmState as AlgorithmState
from ._annealed import AnnealedEM as AnnealedEM
from ._annealed import AnnealedEMState as AnnealedEMState
from ._batch import BatchEM as BatchEM
from ._batch import BatchEMState as BatchEMState
from ._conditional import ECM as ECM
from ._conditional import GeneralizedEM as GeneralizedEM
from ._gradient import GradientAscent as GradientAscent
from ._gradient import GradientAscentState as GradientAscentState
from ._hard import HardEM as HardEM
from ._incremental import IncrementalEM as IncrementalEM
from ._incremental import IncrementalEMState as IncrementalEMState
from ._overrelaxed import OverRelaxedEM as OverRelaxedEM
from ._overrelaxed import OverRelaxedEMState as OverRelaxedEMState
from ._shuffle import permute as permute
from ._stepwise import StepwiseEM as StepwiseEM
from ._stepwise import StepwiseEMState as StepwiseEMState
from ._stepwise import step_size as step_size
from ._stepwise import stepwise_update as stepwise_update
from ._stochastic import MonteCarloEM as MonteCarloEM
from ._stochastic import SAEM as SAEM
from ._stochastic import SampledEMState as SampledEMState
from ._stochastic import StochasticEM as StochasticEM
