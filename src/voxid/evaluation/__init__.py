"""Evaluation of trained models: run a checkpoint over data, measure it, write a report.

`evaluate(checkpoint, store, out_dir, EvalOptions(...))` writes ``report.json`` (stable
keys; ``summary`` holds the headline numbers), ``report.md`` and its PNG figures:

- identification (closed set): top-1/top-5, macro/weighted precision, recall and F1, a
  per-speaker table, confusion matrices (CSV and PNG), most confused pairs, and the test
  speakers the model never saw, reported apart;
- authentication (members vs outsiders): FAR (seen / unseen outsiders) and FRR at the
  stored threshold, EER, minDCF, DET/ROC curves;
- verification on embeddings: store trials (enrol / test) or a VoxCeleb trial list,
  cosine scores with optional AS-norm, EER and minDCF;
- chunk and file level throughout; MC-dropout uncertainty; inference speed.

Metrics come from `voxid.metrics`; nothing here imports Lightning.
"""

from __future__ import annotations

from voxid.evaluation.report import SUMMARY_KEYS, summarise
from voxid.evaluation.run import EvalOptions, evaluate

__all__ = ["SUMMARY_KEYS", "EvalOptions", "evaluate", "summarise"]
