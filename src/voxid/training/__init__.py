"""Training, in one package: `run` (`train(cfg, data, out_dir) -> RunResult`, the Lightning
Trainer), data wiring, batch preparation, the LightningModule, the final scoring, the GMM
baseline and sweeps. Only `run` and `module` import Lightning, and nothing outside this
package does (tests/test_architecture.py checks both).
"""
