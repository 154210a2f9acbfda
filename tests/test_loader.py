"""StoreDataset and collate_pad over a real prepared store."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from voxid.data import assign_splits, load_corpus
from voxid.data.loader import StoreDataset, collate_pad
from voxid.data.prepare import PrepareConfig, prepare
from voxid.errors import DataError
from voxid.features import FeatureConfig


@pytest.fixture(scope="module")
def stores(speech_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    corpus = assign_splits(load_corpus(speech_corpus), seed=1)
    chunked = prepare(corpus, root / "chunked.h5", PrepareConfig(), workers=1).out_path
    whole = prepare(
        corpus,
        root / "whole.h5",
        PrepareConfig(feature=FeatureConfig.fbank(), chunk=None),
        workers=1,
    )
    return chunked, whole.out_path


def test_items_match_the_store(stores):
    path = stores[0]
    ds = StoreDataset(path, "train")
    assert len(ds) == ds.info.splits["train"] == len(ds.labels)
    assert set(ds.items["split"]) == {"train"}
    with h5py.File(path) as f:
        data = f["data"][()]
    for i in (0, len(ds) // 2, len(ds) - 1):
        x, y = ds[i]
        o, n = ds.items["offset"][i], ds.items["length"][i]
        assert x.dtype == torch.float32 and x.shape == (n, 64)
        np.testing.assert_array_equal(x.numpy(), data[o : o + n])
        assert y == ds.labels[i]
    cached = StoreDataset(path, "train", cache=True)
    assert all(torch.equal(cached[i][0], ds[i][0]) for i in range(len(ds)))


@pytest.mark.parametrize("window", [1, 50, 1 << 22])
def test_cache_of_a_scattered_split_holds_its_own_rows(stores, window):
    """A split spread over the store (val, test: a few items per speaker) is cached in a
    buffer of its own rows, not the span from its first item to its last, and reads the
    same as item-by-item reads, whatever the grouping of the reads."""
    for path in stores:
        plain = StoreDataset(path, ["val", "test"])
        cached = StoreDataset(path, ["val", "test"])
        cached._cache = cached._read_all(window=window)
        assert all(torch.equal(cached[i][0], plain[i][0]) for i in range(len(plain)))
        (buffer,) = {id(x.base): x.base for x in cached._cache}.values()
        rows = int(plain.items["length"].sum())
        assert buffer.shape[0] == rows
        first, last = plain.items["offset"].argmin(), plain.items["offset"].argmax()
        span = plain.items["offset"][last] + plain.items["length"][last]
        assert rows < span - plain.items["offset"][first]  # scattered: a span read wastes RAM


def test_filters(stores):
    path = stores[0]
    both = StoreDataset(path, ["val", "test"])
    assert set(both.items["split"]) == {"val", "test"}
    everyone = StoreDataset(path, None)
    assert len(everyone) == len(everyone.info)
    two = StoreDataset(path, None, speakers="alice,chloe")
    names = {two.info.speakers[y] for y in two.labels}
    assert names == {"alice", "chloe"}  # labels stay global: chloe is still class 2
    assert set(two.labels) == {0, 2}
    assert len(StoreDataset(path, None, speakers=[1])) == int((everyone.labels == 1).sum())
    with pytest.raises(DataError, match="no items in split 'enroll'"):
        StoreDataset(path, "enroll")
    with pytest.raises(DataError, match="no speaker matches"):
        StoreDataset(path, None, speakers="zoe")


def test_dataloader_with_worker_processes(stores):
    ds = StoreDataset(stores[1], "train")  # whole files: variable length
    ds[0]  # open the file in the parent first: workers must reopen their own handle
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2, collate_fn=collate_pad)
    seen = 0
    for x, lengths, labels in loader:
        assert x.shape[0] == lengths.shape[0] == labels.shape[0]
        assert x.shape[1] == int(lengths.max()) and x.shape[2] == 80
        for k in range(x.shape[0]):
            ref, y = ds[seen + k]
            assert torch.equal(x[k, : lengths[k]], ref) and int(labels[k]) == y
            assert not x[k, lengths[k] :].any()
        seen += x.shape[0]
    assert seen == len(ds)
    assert len(set(ds.items["length"])) > 1
