"""EM algorithms as pure ``init`` / ``step`` pairs."""

from ._base import Algorithm as Algorithm
from ._base import AlgorithmState as AlgorithmState
from ._batch import BatchEM as BatchEM
from ._batch import BatchEMState as BatchEMState
