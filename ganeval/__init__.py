"""ganeval: the Progressive GAN paper's metrics (Laplacian SWD, MS-SSIM, FID, IS), faithful to the reference
and fast.

Python API::

    from ganeval import swd, msssim_diversity, fid, evaluate_all
    result = swd("generated/", "real/", num_images=16384)
    print(result.levels, result.avg)
"""

from gancore.errors import UserError, SourceError
from .evaluate import evaluate_all
from .fid import compute_statistics, fid, frechet_distance
from .isc import inception_score, inception_score_source
from .msssim import ms_ssim, msssim_diversity
from gancore.sources import ImageSource, ImageStream, open_source, register_source_opener
from .swd import SWDResult, laplacian_pyramid, sliced_wasserstein, swd

__version__ = "0.1.0"

__all__ = [
           "UserError",
           "ImageSource",
           "ImageStream",
           "SWDResult",
           "SourceError",
           "__version__",
           "compute_statistics",
           "evaluate_all",
           "fid",
           "frechet_distance",
           "inception_score",
           "inception_score_source",
           "laplacian_pyramid",
           "ms_ssim",
           "msssim_diversity",
           "open_source",
           "register_source_opener",
           "sliced_wasserstein",
           "swd",
]
