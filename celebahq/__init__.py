"""celebahq: rebuild CelebA-HQ from the CelebA in-the-wild release (the paper's Appendix C).

The pipeline arrives with its own issue; this package shares `ganeval.sources` for every image it reads.
"""
