"""celebahq: rebuild CelebA-HQ from the CelebA in-the-wild release (the paper's Appendix C).

This package shares `gancore.sources` for every image it reads.
"""
