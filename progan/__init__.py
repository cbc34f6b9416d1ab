"""progan: the reference Progressive GAN trainer (Karras et al. 2018), scored by `ganeval`.

    progan train --config tiny --data examples/real --out runs/tiny

Modules: configs (settings and presets), schedule (continuous lod), networks (Table 2), loss (WGAN-GP, LSGAN),
dataset (levels per resolution), training_loop, checkpoint (weights-only files; the generator as a ganeval
source), cli.
"""
