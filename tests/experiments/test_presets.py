"""The shared ``--set`` conversion of every experiment's presets."""

import pytest

from jaxspectra.experiments._presets import apply_overrides

P = {"smoke": {"steps": 10, "lr": 0.1, "lrs": (0.1,), "on": False, "name": "a"}}


def test_each_value_takes_its_presets_type():
    got = apply_overrides(P, "smoke", {"steps": "2e1", "lr": "1e-3", "lrs": "0.1, 0.2",
                                       "on": "false", "name": "b"})
    assert got == {"steps": 20, "lr": 1e-3, "lrs": (0.1, 0.2), "on": False, "name": "b"}
    assert apply_overrides(P, "smoke", {"on": "true"})["on"] is True
    assert P["smoke"]["steps"] == 10  # the preset itself is untouched


@pytest.mark.parametrize("over, match", [
    ({"stepz": "1"}, r"unknown override 'stepz'; known keys: .*steps"),
    ({"steps": "2.5"}, r"steps=.*integer.*e\.g\. steps=10"),
    ({"on": "maybe"}, r"true or false"),  # bool("maybe") would have been True
    ({"lr": "fast"}, r"expected float, e\.g\. lr=0\.1"),
])
def test_bad_overrides_name_the_fix(over, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(P, "smoke", over)
    with pytest.raises(ValueError, match="unknown preset 'big'"):
        apply_overrides(P, "big", {})
