"""progan: the reference Progressive GAN trainer (arrives with its own issue), scored by `ganeval`."""
