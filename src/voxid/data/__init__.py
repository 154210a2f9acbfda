"""Corpora, splits, the HDF5 feature store and its torch Dataset.

`voxid.data.corpus` reads folders and manifests, `voxid.data.splits` assigns splits,
`voxid.data.prepare` writes stores, `voxid.data.store` describes them (`StoreInfo`),
`voxid.data.loader` reads them for training.
The loader (which imports torch) is not imported here, so corpus tools stay light.
"""

from voxid.data.corpus import Corpus, CorpusItem, SpeakerSpec, combine, load_corpus
from voxid.data.splits import (
    assign_splits,
    hold_out_for_verification,
    hold_out_speakers,
    val_from_train,
)

__all__ = [
    "Corpus",
    "CorpusItem",
    "SpeakerSpec",
    "assign_splits",
    "combine",
    "hold_out_for_verification",
    "hold_out_speakers",
    "load_corpus",
    "val_from_train",
]
