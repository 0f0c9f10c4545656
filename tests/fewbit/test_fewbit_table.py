"""Table validation and use."""
import numpy as np
import pytest

from tinymoon.fewbit import FewBitError, Table


def test_valid_table_and_bin_rule():
    t = Table([-1.0, 0.0, 2.0], [0.0, 0.25, 0.75, 1.0])
    assert t.bits == 2 and len(t) == 4
    x = np.array([-5.0, -1.0, -0.5, 0.0, 1e-12, 2.0, 3.0, np.inf, -np.inf])
    # a point on a border goes to the lower bin: searchsorted(side='left')
    np.testing.assert_array_equal(t.index(x), [0, 0, 1, 1, 2, 2, 3, 3, 0])
    assert t.index(x).dtype == np.uint8
    np.testing.assert_array_equal(t.derivative(x), [0, 0, .25, .25, .75, .75, 1, 1, 0])
    assert t.derivative(np.float32([1.0])).dtype == np.float32
    with pytest.raises(ValueError):
        t.borders[0] = 5.0                                   # read-only
    assert Table.from_arrays(t.to_arrays()) == t


@pytest.mark.parametrize("borders,levels,kw,match", [
    ([0.0], [0.0, 1.0], {"bits": 0}, r"bits must be an integer in 1\.\.8"),
    ([0.0], [0.0, 1.0], {"bits": 9}, r"bits must be an integer in 1\.\.8"),
    ([0.0], [0.0, 1.0], {"bits": 1.5}, r"bits must be an integer in 1\.\.8"),
    ([0.0, 1.0], [0.0, 1.0, 2.0], {}, r"len\(levels\) must be 2\*\*bits .* got 3 levels"),
    ([], [1.0], {}, r"got 1 levels"),
    ([0.0] * 511, [0.0] * 512, {}, r"got 512 levels"),
    ([0.0], [0.0, 1.0], {"bits": 2}, r"2-bit table needs exactly 2\*\*2 = 4 levels; got 2"),
    ([0.0, 1.0], [0.0, 1.0], {}, r"2 levels need 1 interior borders .* got 2"),
    ([-np.inf, 0.0, 1.0], [0, 1, 2, 3], {}, r"borders must be finite; non-finite at positions \[0\]"),
    ([0.0, np.nan, 1.0], [0, 1, 2, 3], {}, r"non-finite at positions \[1\]"),
    ([0.0, 1.0, 2.0], [0, np.nan, 2, 3], {}, r"levels must be finite"),
    ([0.0, 2.0, 1.0], [0, 1, 2, 3], {}, r"strictly increasing; borders\[1\] = 2\.0 >= borders\[2\] = 1\.0"),
    ([0.0, 1.0, 1.0], [0, 1, 2, 3], {}, r"strictly increasing"),
    ([[0.0]], [0.0, 1.0], {}, r"1-D array of interior borders"),
])
def test_invalid_tables(borders, levels, kw, match):
    with pytest.raises(FewBitError, match=match):
        Table(borders, levels, **kw)


def test_eight_bits_is_the_limit():
    t = Table(np.arange(255.0), np.zeros(256))
    assert t.bits == 8 and t.index([1e9])[0] == 255
