"""ogc_jax: Optimized Gradient Clipping for noisy-label learning, in JAX.

The method (Ye et al., AAAI 2025) clips the derivative of the loss w.r.t. the
predicted probability of the given label at a threshold chosen during training
from a two-component Gaussian mixture over recent losses.
"""

from ogc_jax import baselines
from ogc_jax import losses
from ogc_jax.gmm import (GMM, fit_gmm, fit_gmm_counting_steps, noisy_log_odds,
                         noisy_posterior)
from ogc_jax.threshold import (MAX_PROB, MIN_PROB, derivative_magnitude,
                               feasible_probability, noise_to_clean_ratio,
                               solve_threshold)
from ogc_jax.transform import (OGCState, OGCWeights, ogc, ogc_weights,
                               weighted_base_loss)

__version__ = "0.1.0"

__all__ = [
    "GMM", "MAX_PROB", "MIN_PROB", "OGCState", "OGCWeights",
    "baselines", "derivative_magnitude", "feasible_probability", "fit_gmm",
    "fit_gmm_counting_steps", "losses", "noise_to_clean_ratio",
    "noisy_log_odds", "noisy_posterior", "ogc", "ogc_weights", "solve_threshold",
    "weighted_base_loss",
]
