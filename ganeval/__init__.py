"""ganeval: the Progressive GAN paper's metrics (Laplacian SWD, MS-SSIM, FID), faithful to the reference and fast.

Python API::

    from ganeval import swd
    result = swd("generated/", "real/", num_images=16384)
    print(result.levels, result.avg)
"""

from .errors import GanevalError, SourceError
from .sources import ImageSource, ImageStream, open_source
from .swd import SWDResult, laplacian_pyramid, sliced_wasserstein, swd

__version__ = "0.1.0"

__all__ = ["GanevalError", "SourceError", "ImageSource", "ImageStream", "open_source", "SWDResult",
           "laplacian_pyramid", "sliced_wasserstein", "swd", "__version__"]
