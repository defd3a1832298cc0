"""Nothing the engine redesign did changes a number: every check's tables equal the reference
tables saved before it (``tests/engine_reference.py``), with activation reuse on and off."""

from __future__ import annotations

import warnings

import engine_reference as ref
import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def stored():
    return ref.load()


def _compare(name: str, got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns), name
    assert len(got) == len(want), f"{name}: {len(got)} rows, reference {len(want)}"
    for c in want.columns:
        g, w = got[c].to_numpy(), want[c].to_numpy()
        if w.dtype.kind in "fi" and g.dtype.kind in "fi":
            g, w = g.astype(float), w.astype(float)
            assert np.array_equal(np.isnan(g), np.isnan(w)), f"{name}.{c}: NaN positions differ"
            ok = ~np.isnan(w)
            diff = np.abs(g[ok] - w[ok])
            assert diff.max(initial=0.0) <= 1e-6, f"{name}.{c}: max |diff| {diff.max()}"
        else:
            assert [str(v) for v in g] == [str(v) for v in w], f"{name}.{c} differs"


def _check(stored, reuse: bool) -> None:
    tables, arrays = stored
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, _ = ref.everything(reuse=reuse, stored=arrays)
    assert sorted(got) == sorted(tables)
    for name, want in tables.items():
        _compare(name, got[name].reset_index(drop=True), want)


def test_reference_tables_unchanged(stored):
    _check(stored, reuse=True)


@pytest.mark.slow
def test_reference_tables_unchanged_without_reuse(stored):
    _check(stored, reuse=False)
