"""emjax: GPU-accelerated, differentiable mixture models fitted by EM, on JAX.

Importing emjax changes no global JAX configuration. Enable float64 yourself
(``jax.config.update("jax_enable_x64", True)``) if you want it.
"""

from . import algorithms as algorithms
from . import data as data
from . import datasets as datasets
from . import families as families
from .models._seeding import kmeans as kmeans
from .models._seeding import kmeans_plus_plus as kmeans_plus_plus
from .models._kmeans import CenterShift as CenterShift
from .models._kmeans import KMeans as KMeans
from .models._kmeans import KMeansParams as KMeansParams
from .models._kmeans import KMeansStats as KMeansStats
from .models._kmeans import greedy_kmeans_plus_plus as greedy_kmeans_plus_plus
from .models._kmedoids import KMedoids as KMedoids
from .models._kmedoids import KMedoidsParams as KMedoidsParams
from .models._mixture import Mixture as Mixture
from .models._mixture import MixtureParams as MixtureParams
from .models._mixture import MixtureStats as MixtureStats
from ._model import EMModel as EMModel
from ._model import UserModel as UserModel
from ._model import as_model as as_model
from .models._gating import ConstantGating as ConstantGating
from .models._gating import Gating as Gating
from ._model import add_stats as add_stats
from ._model import scale_stats as scale_stats
from .families._priors import BetaPrior as BetaPrior
from .families._priors import Dirichlet as Dirichlet
from .families._priors import GammaPrior as GammaPrior
from .families._priors import NormalInverseWishart as NormalInverseWishart
from ._adjoint import Adjoint as Adjoint
from ._adjoint import ForwardAdjoint as ForwardAdjoint
from ._result import RESULTS as RESULTS
from ._result import FitResult as FitResult
from ._runner import fit as fit
from ._runner import fit_chunks as fit_chunks
from ._stopping import ObjectiveChange as ObjectiveChange
from ._stopping import ParameterChange as ParameterChange
from ._stopping import RelativeChange as RelativeChange
from ._stopping import ResponsibilityChange as ResponsibilityChange
from ._stopping import StoppingRule as StoppingRule
from .data import Stream as Stream
from .data import predict_chunks as predict_chunks
from .data import score_chunks as score_chunks
from .algorithms import AnnealedEM as AnnealedEM
from .algorithms import BatchEM as BatchEM
from .algorithms import ECM as ECM
from .algorithms import GeneralizedEM as GeneralizedEM
from .algorithms import HardEM as HardEM
from .algorithms import MonteCarloEM as MonteCarloEM
from .algorithms import OverRelaxedEM as OverRelaxedEM
from .algorithms import SAEM as SAEM
from .algorithms import StochasticEM as StochasticEM
from .algorithms import GradientAscent as GradientAscent
from .algorithms import IncrementalEM as IncrementalEM
from .algorithms import StepwiseEM as StepwiseEM
from .families import Bernoulli as Bernoulli
from .families import BernoulliParams as BernoulliParams
from .families import Categorical as Categorical
from .families import CategoricalParams as CategoricalParams
from .families import Binomial as Binomial
from .families import BinomialParams as BinomialParams
from .families import Gaussian as Gaussian
from .families import GaussianParams as GaussianParams
from .families import Multinomial as Multinomial
from .families import MultinomialParams as MultinomialParams
from .families import Poisson as Poisson
from .families import PoissonParams as PoissonParams
from .families import StudentT as StudentT
from .families import StudentTParams as StudentTParams

__version__ = "0.1.0"
