"""The dead band between low-water and headroom, checked as the controller applies them: each
mark is the larger of its _mib and its _ratio of the guest's size, at every size from floor_mib
to max_mib (or the largest guest supported)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from autoballoon.core.policy import MAX_GUEST_MIB, GuestPolicy

MIB = 1024


@pytest.mark.parametrize(
    ("fields", "low_field", "head_field"),
    [
        # a 4 GiB guest under constant load flipped 17 times in 50 minutes with this one
        ({"headroom_ratio": 0}, "low_water_ratio", "headroom_mib"),
        ({"headroom_mib": 0}, "low_water_mib", "headroom_ratio"),
        ({"low_water_mib": 500}, "low_water_mib", "headroom_mib"),
        ({"low_water_ratio": 0.2}, "low_water_ratio", "headroom_mib"),
        ({"headroom_mib": 0, "headroom_ratio": 0, "low_water_mib": 0, "low_water_ratio": 0},
         "low_water_mib", "headroom_mib"),
    ],
)  # fmt: skip
def test_a_policy_whose_dead_band_can_close_is_refused_naming_both_fields(
    fields: dict[str, float], low_field: str, head_field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        GuestPolicy(**fields)  # type: ignore[arg-type]
    message = str(err.value)
    assert f"{low_field} = " in message and f"{head_field} = " in message
    assert "dead band" in message


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"headroom_ratio": 0, "max_mib": 900},  # the 64 MiB headroom holds up to 914 MiB
        {"headroom_mib": 0, "low_water_mib": 0},
        {"headroom_mib": 0, "floor_mib": 256},  # 15 % of 256 MiB is 38 MiB, above 32
    ],
)
def test_a_policy_whose_dead_band_stays_open_is_accepted(fields: dict[str, float]) -> None:
    GuestPolicy(**fields)  # type: ignore[arg-type]


def test_accepted_means_open_at_every_size_and_refused_means_closed_at_one() -> None:
    seen: Counter[str] = Counter()

    @seed(20261205)
    @settings(max_examples=300, deadline=None, database=None)
    @given(
        low_mib=st.integers(0, 512),
        low_ratio=st.floats(0, 0.9),
        head_mib=st.integers(0, 512),
        head_ratio=st.floats(0, 0.9),
        floor_mib=st.integers(16, 4096),
        max_mib=st.one_of(st.none(), st.integers(4096, 1 << 20)),
        sizes=st.lists(st.floats(0, 1), min_size=1, max_size=20),
    )
    def prop(
        low_mib: int,
        low_ratio: float,
        head_mib: int,
        head_ratio: float,
        floor_mib: int,
        max_mib: int | None,
        sizes: list[float],
    ) -> None:
        fields = {
            "low_water_mib": low_mib,
            "low_water_ratio": low_ratio,
            "headroom_mib": head_mib,
            "headroom_ratio": head_ratio,
            "floor_mib": floor_mib,
            "max_mib": max_mib,
        }
        top = max_mib or MAX_GUEST_MIB
        try:
            p = GuestPolicy(**fields)  # type: ignore[arg-type]
        except ValidationError as err:
            # refused: the size it names really closes the band (within rounding)
            named = float(str(err).split(" MiB guest")[0].rsplit(" ", 1)[1])
            assert floor_mib - 1 <= named <= top + 1
            low = max(low_mib, low_ratio * named)
            head = max(head_mib, head_ratio * named)
            assert low >= head - 1
            seen["refused"] += 1
            return
        for x in sizes:
            size_kib = int((floor_mib + x * (top - floor_mib)) * MIB)
            assert p.low_water_kib(size_kib) <= p.headroom_kib(size_kib)
        seen["accepted"] += 1

    prop()
    assert seen["accepted"] >= 30 and seen["refused"] >= 30, seen
