"""EM models: finite mixtures (with their gating and seeding), mixtures of experts, k-means and k-medoids; Bayesian linear regression, the RVM and probit regression; discrete Bayesian networks with hidden nodes."""

from ._mixture import Mixture as Mixture
from ._mixture import MixtureParams as MixtureParams
from ._mixture import MixtureStats as MixtureStats
from ._gating import ConstantGating as ConstantGating
from ._gating import Gating as Gating
from ._kmeans import CenterShift as CenterShift
from ._kmeans import KMeans as KMeans
from ._kmeans import KMeansParams as KMeansParams
from ._kmeans import KMeansStats as KMeansStats
from ._kmedoids import KMedoids as KMedoids
from ._kmedoids import KMedoidsParams as KMedoidsParams
from ._kmedoids import KMedoidsStats as KMedoidsStats
from ._regression import BayesianLinearRegression as BayesianLinearRegression
from ._regression import RegressionParams as RegressionParams
from ._regression import RegressionStats as RegressionStats
from ._regression import RelevanceVectorMachine as RelevanceVectorMachine
from ._probit import ProbitParams as ProbitParams
from ._probit import ProbitRegression as ProbitRegression
from ._probit import ProbitStats as ProbitStats
from ._bayesnet import BayesNetParams as BayesNetParams
from ._bayesnet import BayesNetStats as BayesNetStats
from ._bayesnet import DiscreteBayesNet as DiscreteBayesNet
from ._experts import MixtureOfExperts as MixtureOfExperts
from ._gating import SoftmaxGating as SoftmaxGating
from ._gating import SoftmaxGatingStats as SoftmaxGatingStats
