"""Key groups and key hashing: stable, vectorised, well spread."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from rheostat.plan.keygroups import default_owners, groups_of
from rheostat.runtime.keys import hash_array, key_groups


def test_default_owners_are_contiguous_ranges_covering_every_group():
    owners = default_owners(3, 4096)
    assert len(owners) == 4096
    assert list(owners) == sorted(owners)
    assert set(owners) == {0, 1, 2}
    sizes = [len(groups_of(owners, t)) for t in range(3)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("p", [0, 4097])
def test_default_owners_rejects_bad_parallelism(p):
    with pytest.raises(ValueError):
        default_owners(p, 4096)


def test_equal_keys_land_in_equal_groups_across_types():
    batch = pa.record_batch({
        "i": [7, 8, 7, None, None],
        "s": ["x", "yy", "x", None, None],
        "f": [1.5, 2.5, 1.5, None, None],
    })
    for col in ("i", "s", "f"):
        g = key_groups(batch, (col,), 4096)
        assert g[0] == g[2] and g[3] == g[4]
        assert ((g >= 0) & (g < 4096)).all()


def test_hash_ignores_slicing_and_chunking():
    arr = pa.array(["a", "bb", "", "ccc", "dddd"])
    assert (hash_array(arr.slice(1, 3)) == hash_array(pa.array(["bb", "", "ccc"]))).all()
    chunked = pa.chunked_array([["a", "bb"], ["", "ccc", "dddd"]])
    assert (hash_array(chunked) == hash_array(arr)).all()


def test_dictionary_and_large_strings_hash_like_plain_strings():
    plain = pa.array(["a", "b", "a", "zz"])
    assert (hash_array(plain.dictionary_encode()) == hash_array(plain)).all()
    assert (hash_array(plain.cast(pa.large_string())) == hash_array(plain)).all()


def test_timestamps_hash_like_their_integer_milliseconds():
    ts = pa.array([1000, 2000], pa.timestamp("ms"))
    assert (hash_array(ts) == hash_array(pa.array([1000, 2000], pa.int64()))).all()


def test_multi_column_keys_depend_on_column_order():
    b = pa.record_batch({"a": [1, 2], "b": [2, 1]})
    ab, ba = key_groups(b, ("a", "b"), 1 << 20), key_groups(b, ("b", "a"), 1 << 20)
    assert ab[0] == ba[1] and ab[0] != ab[1]


def test_keys_spread_evenly_over_groups():
    g = key_groups(pa.record_batch({"k": np.arange(400_000)}), ("k",), 64)
    counts = np.bincount(g, minlength=64)
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()


def test_hash_is_the_same_in_another_process():
    code = (
        "import pyarrow as pa; from rheostat.runtime.keys import key_groups;"
        "print(key_groups(pa.record_batch({'s': ['alpha', 'beta'], 'i': [1, 2]}),"
        " ('s', 'i'), 4096).tolist())"
    )
    out = subprocess.check_output([sys.executable, "-c", code], text=True)
    here = key_groups(pa.record_batch({"s": ["alpha", "beta"], "i": [1, 2]}), ("s", "i"), 4096)
    assert out.strip() == str([int(x) for x in here])


def test_unhashable_key_type_is_a_clear_error():
    with pytest.raises(TypeError, match="cannot hash key column"):
        hash_array(pa.array([[1], [2]]))
