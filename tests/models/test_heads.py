from __future__ import annotations

import pytest

from workbench.errors import HeadIndexError
from workbench.models.heads import Head, parse_head, parse_heads


def test_parse_string_and_tuple():
    assert parse_head("L5H3") == Head(5, 3)
    assert parse_head(" l0h12 ") == Head(0, 12)
    assert parse_head((2, 1)) == Head(2, 1)
    assert str(Head(4, 7)) == "L4H7"


def test_parse_lists_whole_layers_and_dedup():
    assert parse_heads("L0H1,L2H3,L0H1") == [Head(0, 1), Head(2, 3)]
    assert parse_heads("L1", n_layers=2, n_heads=3) == [Head(1, 0), Head(1, 1), Head(1, 2)]
    assert parse_heads([(0, 0), "L1H1"]) == [Head(0, 0), Head(1, 1)]


@pytest.mark.parametrize("bad", ["L5", "H3", "5,3", "L-1H2", "LxH1", ""])
def test_malformed_heads_are_rejected_with_the_value(bad):
    with pytest.raises(HeadIndexError) as err:
        parse_head(bad)
    assert repr(bad) in str(err.value)
    assert "L<layer>H<head>" in str(err.value)


def test_out_of_range_names_the_limit():
    with pytest.raises(HeadIndexError, match=r"layer 4 in L4H0 is out of range: the model has 4 layers"):
        parse_head("L4H0", n_layers=4, n_heads=8)
    with pytest.raises(HeadIndexError, match=r"head 8 in L0H8 is out of range.*8 query heads"):
        parse_head("L0H8", n_layers=4, n_heads=8)


def test_geometry_checks_heads(tiny_llama):
    geo = tiny_llama.geometry
    assert geo.head("L1H3") == Head(1, 3)
    with pytest.raises(HeadIndexError, match="between 0 and 3"):
        geo.head("L1H4")
    assert len(geo.all_heads()) == geo.n_layers * geo.n_heads
