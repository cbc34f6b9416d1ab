"""ganeval: the Progressive GAN paper's metrics (Laplacian SWD, MS-SSIM, FID, IS) and KID and precision/recall,
faithful to the references and fast; every metric is a spec registered in `ganeval.registry` (the built-in six in `ganeval.metric_main`) and fed
by one pass.

Python API::

    from ganeval import compute_swd, compute_fid, compute_metrics, msssim_diversity
    result = compute_swd("generated/", "real/", num_images=16384)
    print(result.levels, result.avg)
    scores = compute_metrics("generated/", "real/", "fid,kid,pr")   # one decoding and Inception pass
    print(scores.results["kid"].mean, scores.results["pr"].precision)

Package-level functions never share a name with a module (`import ganeval.swd` is the module).
"""

from gancore.errors import SourceError, UserError
from gancore.sources import ImageSource, ImageStream, open_source, register_source_opener

from .evaluate import evaluate_all
from .fid import compute_fid, compute_statistics
from .frechet import frechet_distance
from .isc import inception_score, inception_score_source
from .kid import kernel_inception_distance
from .metric_main import compute_metrics
from .msssim import ms_ssim, msssim_diversity
from .precision_recall import knn_precision_recall
from .registry import MetricSettings, MetricSpec, list_metrics, register_metric, setting
from .swd import SWDResult, compute_swd, laplacian_pyramid, sliced_wasserstein

__version__ = "0.1.0"

__all__ = [
    "ImageSource",
    "ImageStream",
    "MetricSettings",
    "MetricSpec",
    "SWDResult",
    "SourceError",
    "UserError",
    "__version__",
    "compute_fid",
    "compute_metrics",
    "compute_statistics",
    "compute_swd",
    "evaluate_all",
    "frechet_distance",
    "inception_score",
    "inception_score_source",
    "kernel_inception_distance",
    "knn_precision_recall",
    "laplacian_pyramid",
    "list_metrics",
    "ms_ssim",
    "msssim_diversity",
    "open_source",
    "register_metric",
    "register_source_opener",
    "setting",
    "sliced_wasserstein",
]
