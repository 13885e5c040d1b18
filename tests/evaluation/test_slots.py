"""Slot error rate of E2E texts: MR parsing, the matching rules slot by slot (realised / missed /
contradicted / added, negation and the substring traps), the SER fraction, self-contradictions, and the rules on
real E2E references."""

from __future__ import annotations

import csv
import dataclasses
import itertools
from pathlib import Path

import pytest

from diffusionbert.errors import ConfigError, DataError
from diffusionbert.evaluation.slots import (
    SlotCheck,
    check_slots,
    normalise,
    parse_mr,
    self_contradictions,
    slot_error_rate,
)

VALID_CSV = Path(__file__).parents[2].parent / "shared" / "data" / "e2e" / "valid.csv"


def verdict(mr: str, text: str, slot: str) -> str:
    """The one verdict ``check_slots`` gives ``slot``: realised, missed or contradicted."""
    check = check_slots(mr, text)
    (found,) = [name for name in ("realised", "missed", "contradicted") if slot in getattr(check, name)]
    return found


# ------------------------------------------------------------------------------------------- parse_mr


def test_parse_mr_keeps_order_and_strips_spaces() -> None:
    parsed = parse_mr("name[Blue Spice], eatType[coffee shop], area[city centre]")
    assert parsed == {"name": "Blue Spice", "eatType": "coffee shop", "area": "city centre"}
    assert list(parsed) == ["name", "eatType", "area"]
    assert parse_mr("  near[ Café Rouge ] ,customer rating[5 out of 5]  ") == {
        "near": "Café Rouge",
        "customer rating": "5 out of 5",
    }


@pytest.mark.parametrize(
    ("mr", "problem"),
    [
        ("", "no slot[value] items"),
        ("a nice pub by the river", "no slot[value] items"),
        ("name[Blue Spice", "unbalanced"),
        ("name[Blue Spice]], area[riverside]", "unbalanced"),
        ("name[Blue Spice] area[riverside]", "text outside"),
        ("name[Blue Spice], stars[5]", "unknown slot 'stars'"),
        ("name[Blue Spice], name[Zizzi]", "repeats slot 'name'"),
        ("name[Blue Spice], food[Thai]", "unknown value 'Thai' for slot 'food'"),
        ("name[ ]", "empty value"),
    ],
)
def test_parse_mr_rejects_malformed_mrs_in_one_line(mr: str, problem: str) -> None:
    with pytest.raises(DataError) as info:
        parse_mr(mr)
    message = str(info.value)
    assert problem in message
    assert repr(mr) in message
    assert "\n" not in message


def test_check_slots_takes_a_parsed_mr_and_validates_it() -> None:
    check = check_slots({"name": "Zizzi", "eatType": "pub"}, "Zizzi is a pub.")
    assert check == SlotCheck(realised=("name", "eatType"), missed=(), contradicted=(), added=())
    with pytest.raises(DataError, match="unknown slot 'stars'"):
        check_slots({"stars": "5"}, "anything")
    with pytest.raises(DataError, match="no slots"):
        check_slots({}, "anything")


# --------------------------------------------------------------------------------------- normalise


def test_normalise_folds_accents_case_hyphens_and_negation() -> None:
    assert normalise("Café's kid-friendly, isn't it? 5/5 at £20-25.") == (
        "cafes kid friendly is not it 5 out of 5 at £20 25"
    )
    # text decoded from word pieces reads the same
    assert normalise("café ' s kid - friendly , isn ' t it ? 5 / 5 at £20 - 25 .") == normalise(
        "Café's kid-friendly, isn't it? 5/5 at £20-25."
    )


# ---------------------------------------------------------------------------------------- name, near


def test_name_is_matched_as_words_with_or_without_a_leading_the() -> None:
    mr = "name[The Rice Boat], near[Café Rouge]"
    assert check_slots(mr, "Rice Boat is near Cafe Rouge.").realised == ("name", "near")
    assert verdict(mr, "The Rice Boats are near Café Rouge.", "name") == "realised"  # plural/possessive s
    assert verdict("name[Cocum]", "Cocum's coffee shop", "name") == "realised"
    assert verdict(mr, "The Rice Boathouse is near Café Rouge.", "name") == "missed"  # whole words only


def test_name_and_near_are_told_apart_by_value_and_never_contradicted() -> None:
    mr = "name[The Rice Boat], near[Café Rouge]"
    check = check_slots(mr, "Zizzi is near Café Rouge.")
    assert check.missed == ("name",)
    assert check.realised == ("near",)
    assert check.contradicted == ()


# ---------------------------------------------------------------------------------------------- eatType


def test_eat_type() -> None:
    assert verdict("eatType[pub]", "A cosy pub by the river.", "eatType") == "realised"
    assert verdict("eatType[pub]", "A cosy coffee shop.", "eatType") == "contradicted"
    assert verdict("eatType[coffee shop]", "A family-friendly café.", "eatType") == "realised"
    assert verdict("eatType[restaurant]", "It is a pub.", "eatType") == "contradicted"
    # "restaurant" is generic: it neither realises nor contradicts pub
    assert verdict("eatType[pub]", "A restaurant serving Italian food.", "eatType") == "missed"
    assert verdict("eatType[pub]", "A pub and restaurant.", "eatType") == "realised"
    # the café in a venue's name is masked
    assert verdict("eatType[pub], near[Café Rouge]", "It is near Café Rouge.", "eatType") == "missed"


# ------------------------------------------------------------------------------------------------ food


def test_food() -> None:
    assert verdict("food[Fast food]", "It serves fast-food.", "food") == "realised"
    assert verdict("food[English]", "Traditional British cuisine.", "food") == "realised"
    assert verdict("food[French]", "Burgers and French fries.", "food") == "missed"
    assert verdict("food[French]", "It serves Italian food.", "food") == "contradicted"
    assert verdict("food[Japanese]", "It serves sushi.", "food") == "missed"  # lexical only
    # "Indian" inside a venue name is no mention of Indian food
    text = "Chinese food near Raja Indian Cuisine."
    assert verdict("food[Chinese]", text, "food") == "realised"
    assert (
        verdict("food[Chinese], near[Raja Indian Cuisine]", "A pub near Raja Indian Cuisine.", "food")
        == "missed"
    )


# ------------------------------------------------------------------------------------------ priceRange


@pytest.mark.parametrize(
    ("value", "text", "expected"),
    [
        ("less than £20", "It is inexpensive.", "realised"),
        ("cheap", "Meals cost under 20 pounds.", "realised"),
        ("cheap", "A low-priced menu.", "realised"),
        ("moderate", "Prices range from £20-£25.", "realised"),
        ("£20-25", "It is moderately priced.", "realised"),
        ("£20-25", "A mid-priced pub.", "realised"),
        ("high", "Meals cost more than 30 pounds.", "realised"),
        ("more than £30", "A high-priced restaurant.", "realised"),
        ("cheap", "It is rather expensive.", "contradicted"),
        ("cheap", "Cheap drinks, but an expensive menu.", "contradicted"),
        ("more than £30", "An average priced menu.", "contradicted"),
        ("cheap", "It is not too expensive.", "missed"),
        ("cheap", "It is affordable.", "missed"),
        # the average followed by an amount is the amount
        ("more than £30", "The average price is more than £30.", "realised"),
    ],
)
def test_price_range(value: str, text: str, expected: str) -> None:
    assert verdict(f"priceRange[{value}]", text, "priceRange") == expected


def test_price_words_before_a_rating_word_are_not_prices() -> None:
    mr = "priceRange[moderate], customer rating[low]"
    assert check_slots(mr, "It is moderately priced, low rated.").errors == 0
    assert verdict("priceRange[cheap]", "A moderately rated coffee shop.", "priceRange") == "missed"


# ------------------------------------------------------------------------------------- customer rating


@pytest.mark.parametrize(
    ("value", "text", "expected"),
    [
        ("5 out of 5", "A five-star coffee shop.", "realised"),
        ("high", "It is rated 5/5 by customers.", "realised"),
        ("high", "A highly rated pub.", "realised"),
        ("1 out of 5", "It has a customer rating of one out of five.", "realised"),
        ("low", "A poorly rated pub.", "realised"),
        ("average", "A moderately rated pub.", "realised"),
        ("3 out of 5", "Customers rate it average.", "realised"),
        ("high", "It is rated 1 out of 5.", "contradicted"),
        ("average", "A highly rated pub with a low customer rating.", "contradicted"),
        # an adjective followed by a number yields to the number
        ("1 out of 5", "It has an average customer rating of 1 out of 5.", "realised"),
        ("low", "It does not have a high customer rating.", "missed"),
        ("high", "It has good reviews.", "missed"),
    ],
)
def test_customer_rating(value: str, text: str, expected: str) -> None:
    assert verdict(f"customer rating[{value}]", text, "customer rating") == expected


def test_high_price_and_high_rating_are_told_apart() -> None:
    mr = "priceRange[cheap], customer rating[high]"
    assert check_slots(mr, "A cheap place with a high customer rating.").errors == 0
    check = check_slots(mr, "A high priced pub with a low customer rating.")
    assert check.contradicted == ("priceRange", "customer rating")


# ------------------------------------------------------------------------------------------------ area


def test_area() -> None:
    assert verdict("area[riverside]", "It is by the river.", "area") == "realised"
    assert verdict("area[city centre]", "In the centre of the city.", "area") == "realised"
    assert verdict("area[city centre]", "Downtown, in the city center.", "area") == "realised"
    assert verdict("area[riverside]", "It is in the city centre.", "area") == "contradicted"
    assert verdict("area[city centre]", "In the city centre, by the riverside.", "area") == "contradicted"
    # placing a riverside venue relative to the centre is neither value
    assert verdict("area[riverside]", "North of the city centre, on the river.", "area") == "realised"
    assert verdict("area[riverside]", "It is near the city centre.", "area") == "missed"


# ---------------------------------------------------------------------------------------- familyFriendly


@pytest.mark.parametrize(
    "text",
    [
        "It is kid-friendly.",
        "A family friendly pub.",
        "Children are welcome.",
        "It welcomes families.",
        "Fun for the whole family.",
        "A children friendly venue.",
    ],
)
def test_family_friendly_yes_phrases(text: str) -> None:
    assert verdict("familyFriendly[yes]", text, "familyFriendly") == "realised"
    assert verdict("familyFriendly[no]", text, "familyFriendly") == "contradicted"


@pytest.mark.parametrize(
    "text",
    [
        "It is not family friendly.",  # contains "family friendly"
        "It isn't kid-friendly.",
        "It is not a child friendly place.",
        "A non family-friendly pub.",
        "Adults only.",
        "No children allowed.",
        "No children welcome.",  # contains "children welcome"
        "It is not suitable for families.",  # contains "suitable for families"
        "It does not allow children.",
        "Children are not welcome.",
        "It is not for the whole family.",  # contains "for the whole family"
    ],
)
def test_family_friendly_no_phrases_are_not_also_yes(text: str) -> None:
    assert verdict("familyFriendly[no]", text, "familyFriendly") == "realised"
    assert verdict("familyFriendly[yes]", text, "familyFriendly") == "contradicted"


def test_family_friendly_missed_and_both() -> None:
    assert verdict("familyFriendly[yes]", "A cheap pub.", "familyFriendly") == "missed"
    both = "It is family friendly, adults only."
    assert verdict("familyFriendly[yes]", both, "familyFriendly") == "contradicted"
    assert verdict("familyFriendly[no]", both, "familyFriendly") == "contradicted"
    # "not only" is no negation
    assert verdict("familyFriendly[yes]", "It is not only family friendly but cheap.", "familyFriendly") == (
        "realised"
    )


# -------------------------------------------------------------------------------------- SlotCheck, SER


def test_slot_check_errors_and_frozen() -> None:
    check = SlotCheck(realised=("name",), missed=("area", "food"), contradicted=("near",))
    assert check.errors == 3
    assert dataclasses.replace(check, added=("priceRange",)).errors == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.missed = ()  # type: ignore[misc]


def test_full_check_of_one_text() -> None:
    mr = (
        "name[The Eagle], eatType[coffee shop], food[French], priceRange[high], customer rating[5 out of 5], "
        "area[riverside], familyFriendly[yes], near[Burger King]"
    )
    text = "Eagle is an expensive, kid friendly coffee shop serving Italian food in the city centre. 5 stars."
    assert check_slots(mr, text) == SlotCheck(
        realised=("name", "eatType", "priceRange", "customer rating", "familyFriendly"),
        missed=("near",),
        contradicted=("food", "area"),
    )


def test_closed_slots_the_mr_lacks_are_added_when_mentioned() -> None:
    mr = "name[Blue Spice], eatType[coffee shop], area[riverside]"
    text = "Blue Spice is a cheap, family friendly coffee shop by the river serving Italian food, near Zizzi."
    check = check_slots(mr, text)
    assert check.realised == ("name", "eatType", "area")
    assert check.added == ("food", "priceRange", "familyFriendly")  # SLOTS order; a name is never added
    assert check.errors == 3
    # negated and generic mentions: "not kid friendly" adds familyFriendly, a bare "restaurant" adds nothing
    assert check_slots("name[Zizzi]", "Zizzi is a restaurant. It is not kid friendly.").added == (
        "familyFriendly",
    )
    assert check_slots("name[Zizzi], food[Italian]", "Zizzi is an Italian restaurant.").added == ()
    # a slot in the MR is contradicted, never added
    contradicted = check_slots("name[Zizzi], area[riverside]", "Zizzi, in the city centre.")
    assert (contradicted.contradicted, contradicted.added) == (("area",), ())


def test_slot_error_rate_by_hand() -> None:
    mrs = [
        "name[Blue Spice], eatType[pub], area[riverside]",
        "name[Zizzi], food[Italian], familyFriendly[yes]",
    ]
    texts = [
        "Blue Spice is a pub in the city centre.",  # area contradicted: 1 error of 3 slots
        "Zizzi serves Italian food.",  # familyFriendly missed: 1 error of 3 slots
    ]
    assert slot_error_rate(mrs, texts) == 2 / 6
    texts[1] = "Zizzi serves cheap Italian food."  # and adds priceRange: 3 errors of 6 slots
    assert slot_error_rate(mrs, texts) == 3 / 6
    assert slot_error_rate(mrs[:1], ["Blue Spice is a pub by the river."]) == 0.0


def test_slot_error_rate_needs_equal_non_empty_inputs() -> None:
    with pytest.raises(ConfigError, match="2 MRs and 1 texts"):
        slot_error_rate(["name[A]", "name[B]"], ["A"])
    with pytest.raises(ConfigError, match="at least one"):
        slot_error_rate([], [])
    with pytest.raises(DataError, match="unknown slot"):
        slot_error_rate(["stars[5]"], ["five stars"])


# ---------------------------------------------------------------------------------- self_contradictions


@pytest.mark.parametrize(
    ("text", "slots"),
    [
        ("The Eagle is kid friendly. Sadly it is not kid friendly.", ("familyFriendly",)),
        ("A cheap pub. Prices are high.", ("priceRange",)),
        ("Rated 5 out of 5, it has a low customer rating.", ("customer rating",)),
        ("The Eagle is a pub by the river. The Eagle is a family friendly coffee shop.", ("eatType",)),
        (
            "Zizzi is a cheap coffee shop, family friendly and expensive. It is a pub, adults only.",
            ("eatType", "priceRange", "familyFriendly"),
        ),
    ],
)
def test_self_contradictions_found(text: str, slots: tuple[str, ...]) -> None:
    assert self_contradictions(text) == slots


@pytest.mark.parametrize(
    "text",
    [
        "The Eagle is a cheap, kid friendly coffee shop near Burger King, rated 5 out of 5.",
        "The Eagle is a coffee shop serving pub food.",  # no second "is a pub"
        "The Eagle is a pub near Café Rouge.",  # a venue's name, not an eatType
        "It is not family friendly and not suitable for children.",  # two no phrases
        "Zizzi serves Italian and Chinese food in the city centre by the river.",  # food, area unchecked
    ],
)
def test_self_contradictions_clean(text: str) -> None:
    assert self_contradictions(text) == ()


# ---------------------------------------------------------------------------------- real E2E references


def test_references_of_valid_set() -> None:
    """The rules on the first 300 rows of E2E valid.csv (human references, which omit some slots).

    Measured: SER 0.0639 (96 errors in 1502 slots: 85 missed, mostly familyFriendly and customer rating
    left out by the reference, 6 contradicted and 5 added, all a price the MR does not give) and no
    self-contradicting reference; on all of valid.csv: SER 0.0889 (2467 of 27759 slots: 2234 missed, 191
    contradicted, 42 added) and 3 self-contradicting references of 4672. The lower
    bound keeps the rules from silently accepting everything.
    """
    if not VALID_CSV.is_file():
        pytest.skip(f"E2E data not found at {VALID_CSV}")
    with VALID_CSV.open(newline="", encoding="utf-8") as handle:
        rows = list(itertools.islice(csv.DictReader(handle), 300))
    assert len(rows) == 300
    ser = slot_error_rate([row["mr"] for row in rows], [row["ref"] for row in rows])
    assert 0.03 < ser < 0.07
    flagged = [row["ref"] for row in rows if self_contradictions(row["ref"])]
    assert len(flagged) <= 1, flagged
