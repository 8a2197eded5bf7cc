"""Component families. Each is a :class:`Family`: ``log_prob``, ``statistics``, ``maximize``."""

from ._base import Family as Family
from ._gaussian import COVARIANCE_TYPES as COVARIANCE_TYPES
from ._gaussian import Gaussian as Gaussian
from ._gaussian import GaussianParams as GaussianParams
from ._gaussian import GaussianStats as GaussianStats
from ._bernoulli import Bernoulli as Bernoulli
from ._bernoulli import BernoulliParams as BernoulliParams
from ._bernoulli import BernoulliStats as BernoulliStats
from ._categorical import Categorical as Categorical
from ._categorical import CategoricalParams as CategoricalParams
from ._categorical import CategoricalStats as CategoricalStats
from ._binomial import Binomial as Binomial
from ._binomial import BinomialParams as BinomialParams
from ._binomial import BinomialStats as BinomialStats
from ._multinomial import Multinomial as Multinomial
from ._multinomial import MultinomialParams as MultinomialParams
from ._multinomial import MultinomialStats as MultinomialStats
from ._poisson import Poisson as Poisson
from ._poisson import PoissonParams as PoissonParams
from ._poisson import PoissonStats as PoissonStats
from ._student import StudentT as StudentT
from ._student import StudentTParams as StudentTParams
from ._student import StudentTStats as StudentTStats
