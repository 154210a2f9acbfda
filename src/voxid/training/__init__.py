"""The parts of `voxid.train`: data wiring, batch preparation, the LightningModule, the
final scoring, the GMM baseline and sweeps. Only `module` (and `voxid.train`) import
Lightning; the rest is plain torch and numpy.
"""
