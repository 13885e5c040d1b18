"""Slot error rate (SER) of E2E NLG data-to-text outputs: which slots of a meaning representation a text
realises, misses or contradicts, by hand-written lexical rules.

An E2E meaning representation (MR) is a comma-separated list of ``slot[value]`` items, e.g.
``name[Blue Spice], eatType[coffee shop], area[city centre]``. The slot error rate of a set of texts is
(missed + contradicted + added slots) / (all MR slots), as in Dušek et al.'s E2E evaluation. The rules are
lexical and deliberately plain, so that a reader can tell why a slot was counted. They were written against
the E2E references, which themselves omit slots and sometimes state wrong values: on ``valid.csv`` the
references score an SER of about 9 %.

Normalisation (of texts and values alike)
    Accents are dropped ("Café" = "Cafe"), text is lower-cased, "n't" becomes " not" ("isn't" = "is
    not"), "/5" becomes "out of 5", apostrophes are deleted ("kid's" = "kids"), and every other character
    that is not a letter, digit or "£" becomes a space: "family-friendly" = "family friendly", "£20-25" =
    "£20 25". Text decoded from word pieces reads the same ("isn ' t", "kid ' s", "5 / 5"). Phrases match
    whole words only.

name, near (open values)
    Realised when the value occurs as whole words, also with an "s" added (possessive or plural: "Cocum's",
    "Travellers Rest Beefeaters"); a value starting with "The" also matches without it ("rice boat").
    Otherwise missed; these slots are never contradicted. name and near are told apart only by their value
    strings. Misspellings are misses ("Crown Plaza Hotel" for "Crowne Plaza Hotel").

Masking
    Before the closed slots are matched, the MR's own name/near values and the E2E venues whose names hold
    a value word (:data:`MASKED_VENUES`: "Raja Indian Cuisine", "Café Rouge", ...) are blanked out, so
    "near Café Rouge" mentions no coffee shop and "near Raja Indian Cuisine" no Indian food.

Mentions and overlaps
    Every phrase listed below that occurs in the text is a *mention* of one value (for priceRange and
    customer rating: one band) of one slot. Overlapping phrases, of any slots, are resolved leftmost-longest:
    the phrase that starts first wins, and among those the longest; a phrase overlapping a winner is
    dropped. So "not kid friendly" counts only as familyFriendly=no, never also as yes, and "moderately
    rated" is a rating, not a "moderate" price. *Neutral* phrases win their span but mention nothing.

eatType
    pub: "pub(s)", "public house"; coffee shop: "coffee shop", "coffeeshop", "coffee house", "café";
    restaurant: "restaurant(s)". The references call pubs and coffee shops "restaurants" too, so
    "restaurant" never contradicts pub or coffee shop (:data:`GENERIC`); pub and coffee shop contradict each
    other and restaurant. "pub food" counts as pub (the references use it for pubs).

food
    The seven values as words: English (also "British"), French (not in "French fries"), Italian, Chinese,
    Indian, Japanese, fast food ("fast-food", "fastfood"). No dishes: "sushi" is not Japanese.

priceRange: three bands; any phrase of a band realises both of its values
    low (cheap, less than £20): "cheap/cheaper/cheapest/cheaply", "inexpensive", "low(er) price(s/d)/
        pricing/cost", "priced low", "price(s)/price range/cost is/are low", "low in price", "below/under/
        less than/cheaper than (the) average [price]", "priced below (the) average", "less than/under/
        below/no more than/up to £20" (also "20", "twenty", "20 pounds/euros").
    mid (moderate, £20-25): "moderate(ly) [priced/expensive/cheap]" (not "moderate quality/food/service"),
        "mid/middle/medium price(d)", "mid/middle/medium range(d)", "average(ly) price(s/d)/price range/
        pricing/cost", "price(s)/price range is average", "average in price", "£20-25", "£20-£25", "20 to
        25 [pounds]", "between £20 and £25", "twenty to twenty five".
    high (high, more than £30): "expensive", "pricey/pricy", "costly", "high(er)/highly price(s/d)/pricing/
        cost", "priced high", "price(s)/price range is/are high", "high end", "high in price", "above/more
        than (the) average price/pricing/range", "priced above (the) average", "more than/over/above/
        greater than/at least/upwards of/exceeding £30" (also "30", "thirty", "30 pounds"), "£30 plus/or
        more".
    "priced low/high", "price range is low/high", "moderate(ly)" and "mid-range" do not count when a rating
    word follows ("moderately priced low rated", "a moderate rating of 3 out of 5").
    Not counted (ambiguous in the references): "affordable", "reasonably priced", "budget", "fair prices".

customer rating: three bands; any phrase of a band realises both of its values
    numbers: "1/3/5 out of 5", "1/3/5 of 5", "1 out 5", "one out of five", "1/3/5 star(s)", "five-star".
    words: "<adjective> [average] [customer] rating(s)/rated/rate/review(s)/reviewed/score/rank(ed)/
        ranking/approval/satisfaction/recommended" and "rating(s)/rated/rate [it] ... is/are/of/as [a/very]
        <adjective>", with adjectives low = low/lowly/poor(ly)/bad(ly), mid = average(ly)/moderate(ly)/
        moderately well/mediocre, high = high(ly)/well/top/excellent ("highly rated", "well-reviewed", "top
        rated"). A word phrase followed by a number ("an average rating of 1 out of 5") does not count: the
        number decides, and "1 out of 5 average rating" is low. Not counted: "good rating(s)/reviews"
        (used for 3 and for 5), "rated number 1".

area
    city centre: "city centre/center", "town centre", "centre of the city/town", "downtown";
    riverside: "riverside", "river", "river side", "riverfront", "riverbank", "waterfront".

familyFriendly: yes / no, with negation
    Let WHO = family/families/child/children/kid(s), FRIEND = "WHO friendly/oriented".
    no: "not/non/none/no/never/isn't [a/an/the/very/really/particularly/considered/viewed as/so much/
        being/...] FRIEND" (also before "family restaurant/pub/place/..."), "WHO unfriendly", "adult(s)
        only/friendly/oriented/establishment/venue/clientele", "only (for) adults", "no [young/small/noisy]
        WHO", "child/kid free", "not/no [a/the/very...] suitable/recommended/good/great/ideal/meant/
        intended/geared/aimed/designed/open/welcoming/friendly/allow/welcome/accept/permit/cater/place/
        bring/take/for/... [for/to/with] [the/young/whole...] WHO" ("not suitable for families", "does not
        allow children", "not a place to bring kids", "no good for families", "not for the whole family"),
        "WHO are not welcome/allowed/permitted".
    yes: FRIEND, "family" before restaurant/pub/place/venue/atmosphere/establishment/eatery/environment/
        setting/spot, "WHO (are) [very] welcome/allowed", "welcome(s/ing) [the/all/young] WHO", "suitable/
        ideal/great/perfect/good/caters for/to [the/all/whole] WHO", "for/to [all] the [whole/entire]
        family", "allow(s) WHO", "friendly with/for/to WHO", "bring/take [the/your] [whole] WHO".
    Thanks to leftmost-longest resolution a "no" phrase that contains a "yes" phrase ("not kid friendly",
    "no children welcome", "not suitable for families") counts only as no.

Neutral phrases (mention nothing)
    "not [come/too/very/so/overly] expensive/cheap/pricey/costly", "less expensive", "not have/give/get/
    receive [it] [a] [very] high/good/great ...", "not [be/rated/very] highly/well/high [rated]", "on
    average", "above/below/more than/less than/cheaper than (the) average" (when no price word follows),
    "average [price/rating] [for a meal/per person] [is/of]" when an amount or number follows ("average
    price is more than £30"), "prices/ratings average", and "north/south/east/west/outside/out/edge/
    outskirts/away/far/near/nearby/close/next [of/from/to] [the] city centre", "(a) mile(s)/minutes [away]
    from the city centre" (the references place riverside venues "north of the city centre").

Verdicts (:func:`check_slots`)
    For a closed slot with MR value v in band b: *contradicted* if the text mentions any band or value of
    the slot other than b, whether or not it also mentions b ("family friendly" plus "adults only"
    contradicts either value; a generic "restaurant" is ignored here); else *realised* if it mentions b;
    else *missed*. A closed slot the MR does not have is *added* when the text mentions any of its values (a
    generic "restaurant" excepted): "a cheap coffee shop" for an MR without priceRange adds priceRange. Names
    are not checked for additions (a text may name any venue).

Self-contradictions (:func:`self_contradictions`, no MR)
    familyFriendly when the text mentions both yes and no; priceRange and customer rating when it mentions
    two bands; eatType only when it *states* two of pub / coffee shop, each as "is/are/it's a(n) [up to
    three words] pub" or "... coffee shop/café" (restaurant is generic, and a bare "pub" next to "coffee
    shop" may be "pub food"). Names are not checked, nor food (a venue may serve two cuisines) nor area
    (riverside venues are placed relative to the city centre). Only :data:`MASKED_VENUES` are masked.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigError, DataError

SLOTS: tuple[str, ...] = (
    "name",
    "eatType",
    "food",
    "priceRange",
    "customer rating",
    "area",
    "familyFriendly",
    "near",
)
"""The E2E slots, in the order the dataset's MRs list them."""

OPEN_SLOTS = frozenset({"name", "near"})

BANDS: Mapping[str, Mapping[str, str]] = {
    "eatType": {"pub": "pub", "coffee shop": "coffee shop", "restaurant": "restaurant"},
    "food": {v: v for v in ("english", "french", "italian", "chinese", "indian", "japanese", "fast food")},
    "priceRange": {
        "cheap": "low",
        "less than £20": "low",
        "moderate": "mid",
        "£20-25": "mid",
        "high": "high",
        "more than £30": "high",
    },
    "customer rating": {
        "low": "low",
        "1 out of 5": "low",
        "average": "mid",
        "3 out of 5": "mid",
        "high": "high",
        "5 out of 5": "high",
    },
    "area": {"city centre": "city centre", "riverside": "riverside"},
    "familyFriendly": {"yes": "yes", "no": "no"},
}
"""For each closed slot, its MR values (lower-cased) and the band each one stands for: the values of a
band realise one another (a "high price range" realises ``priceRange[more than £30]``)."""

GENERIC = frozenset({("eatType", "restaurant")})
"""Mentions that realise their own value but never contradict another (refs call pubs "restaurants")."""

MASKED_VENUES: tuple[str, ...] = (
    "Raja Indian Cuisine",
    "Rainbow Vegetarian Café",
    "Café Adriatic",
    "Café Brazil",
    "Café Rouge",
    "Café Sicilia",
)
"""E2E venue names that contain a value word; blanked before the closed slots are matched."""

_NEUTRAL = ""
"""The slot and band of a phrase that wins its span but mentions nothing."""

# ------------------------------------------------------------------------------------------ phrases
# Regex fragments over normalised text (single spaces, lower case); `_compile` adds whole-word bounds.

_START, _END = r"(?<![\w£])", r"(?![\w£])"
_ONE, _THREE, _FIVE = "(?:1|one)", "(?:3|three)", "(?:5|five)"
_RATED = (
    "(?:customers? )?(?:ratings?|rated|rates?|reviews?|reviewed|scores?|ranks?|ranked|rankings?|approval"
    "|satisfaction|recommended)"
)
_PRICED = "(?:prices?|priced|pricing|price range|costs?|costing)"
_PRICE_IS = "(?:prices?|pricing|price range|costs?)(?: is| are)?(?: very| quite)?"
_AMOUNT_NEXT = (
    r" (?:of |is |was |are |were |at |around |about |averaging )?"
    rf"(?:£|\d|(?:one|three|five|less|more|under|over|above|below|greater|around|about){_END})"
)
_NO_AMOUNT = f"(?!{_AMOUNT_NEXT})"
_NOT_RATED = f"(?! {_RATED}{_END})"
_CURRENCY = "(?: pounds| pound| gbp| euros| quid| dollars)?"
_WHO = "(?:families|family|children|childrens|child|kids|kid)"
_FRIEND = f"{_WHO} (?:friendly|oriented|orientated)"
_FAMILY_PLACE = (
    "family(?= (?:restaurant|pub|place|venue|atmosphere|establishment|eatery|environment|setting|spot))"
)
_DEGREE = (
    "(?:a|an|the|very|really|particularly|especially|considered|viewed|seen|as|exactly|so|much|too|that|most"
    "|at all|being|however|always|actually)"
)
_NOT_FOR = (
    "(?:suitable|recommended|appropriate|ideal|good|great|meant|intended|geared|aimed|designed|open|welcoming"
    "|friendly|allow|allows|welcome|welcomes|accept|accepts|permit|permits|cater|caters|catering|for|place"
    "|venue|spot|location|bring|take|to)"
)
_FOR_WHOM = (
    f"(?: (?:for|to|towards|with|of))?(?: (?:the|young|small|your|their|any|a|all|whole|entire))* {_WHO}"
)
_CITY_CENTRE = "(?:cambridge )?(?:city|citys|town) (?:centre|center)"


def _stars(number: str) -> tuple[str, ...]:
    """``number`` out of five, or ``number`` stars; a following "average" belongs to the number."""
    return (f"{number}(?: out of| of| out) {_FIVE}(?: stars?)?(?: average)?", f"{number} stars?")


def _rating_words(adjectives: str) -> tuple[str, ...]:
    """Rating words: ``<adjective> [average] rating`` and ``rating is <adjective>``, but not when a number
    follows (the number is the rating) nor, in the second form, when a price word follows."""
    return (
        f"(?:{adjectives})(?: average)? {_RATED}{_NO_AMOUNT}",
        f"{_RATED}(?: it| them)?(?: is| are| of| as)?(?: a| an| very| quite)? (?:{adjectives})"
        f"(?! {_PRICED}{_END}){_NO_AMOUNT}",
    )


_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "eatType": {
        "pub": ("pubs?", "public houses?"),
        "coffee shop": ("coffee ?shops?", "coffee ?houses?", "cafes?"),
        "restaurant": ("restaurants?",),
    },
    "food": {
        "english": ("english", "british"),
        "french": ("french(?! fries| fry)",),
        "italian": ("italian",),
        "chinese": ("chinese",),
        "indian": ("indian",),
        "japanese": ("japanese",),
        "fast food": ("fast ?foods?",),
    },
    "priceRange": {
        "low": (
            "cheap(?:er|est|ly)?",
            "inexpensive(?:ly)?",
            f"low(?:er)? {_PRICED}",
            f"priced low{_NOT_RATED}",
            f"{_PRICE_IS} low{_NOT_RATED}",
            "low in price",
            f"(?:below|under|lower than|less than|cheaper than)(?: the)? average(?: {_PRICED})?",
            f"{_PRICED} (?:below|under|lower than|less than)(?: the)? average",
            "(?:less than|under|below|no more than|not more than|up to|lower than)"
            f" (?:£ ?)?(?:20|twenty){_CURRENCY}",
        ),
        "mid": (
            f"moderate(?:ly)?(?: {_PRICED}| expensive| cheap)?"
            f"(?! (?:quality|service|food|portions?){_END}){_NOT_RATED}",
            f"(?:mid|middle|medium)(?: range)? {_PRICED}",
            f"(?:mid|middle|medium) ?ranged?{_NOT_RATED}",
            f"average(?:ly)? {_PRICED}{_NO_AMOUNT}",
            f"{_PRICE_IS} average(?! customer| service| {_RATED}{_END}){_NO_AMOUNT}",
            "average in price",
            f"(?:between )?(?:£ ?)?20(?: to| and)? (?:£ ?)?25{_CURRENCY}",
            f"twenty(?: to| and)? twenty five{_CURRENCY}",
        ),
        "high": (
            "expensive",
            "pric(?:e|)y",
            "costly",
            f"high(?:er|ly)? {_PRICED}",
            f"priced high(?:ly)?{_NOT_RATED}",
            "high end",
            f"{_PRICE_IS} high{_NOT_RATED}",
            "high in price",
            f"(?:above|over|higher than|more than)(?: the)? average(?:ly)?(?: {_PRICED}| ranges?)",
            f"{_PRICED} (?:above|over|higher than|more than)(?: the)? average",
            "(?:more than|over|above|greater than|higher than|at least|upwards of|exceeding)"
            f" (?:£ ?)?(?:30|thirty){_CURRENCY}",
            "£ ?30(?: plus| or more)",
        ),
    },
    "customer rating": {
        "low": (*_stars(_ONE), *_rating_words("low|lowly|poor|poorly|bad|badly")),
        "mid": (*_stars(_THREE), *_rating_words("average|averagely|moderate|moderately(?: well)?|mediocre")),
        "high": (
            *_stars(_FIVE),
            *_rating_words("high|highly|well|top|excellent"),
        ),
    },
    "area": {
        "city centre": (_CITY_CENTRE, "(?:centre|center) of (?:the )?(?:city|town)", "downtown"),
        "riverside": ("river(?:side|front|bank)?", "river side", "waterfront"),
    },
    "familyFriendly": {
        "no": (
            f"(?:not|non|none|no|never|isnt|arent|wasnt)(?: {_DEGREE})* (?:{_FRIEND}|{_FAMILY_PLACE})",
            f"{_WHO} unfriendly",
            "adults? (?:only|friendly|oriented|establishment|venue|clientele|clients|audience)",
            "only (?:for )?adults",
            f"no(?: (?:young|small|little|noisy))? {_WHO}",
            "(?:child|kid) free",
            f"(?:not|no)(?: {_DEGREE})* {_NOT_FOR}(?: {_NOT_FOR})*{_FOR_WHOM}",
            f"{_WHO}(?: are| is)? not (?:welcome|welcomed|allowed|permitted)",
        ),
        "yes": (
            _FRIEND,
            _FAMILY_PLACE,
            f"{_WHO}(?: are| is)?(?: very| always| all| most)? (?:welcome|welcomed|allowed)",
            f"welcom(?:e|es|ing)(?: to)?(?: (?:the|all|young|your))* {_WHO}",
            "(?:suitable|ideal|great|perfect|good|caters?|catering) (?:for|to)"
            f"(?: (?:the|all|young|your|whole))* {_WHO}",
            "(?:for|to) (?:all )?(?:the )?(?:whole |entire )?family",
            f"allows? {_WHO}",
            f"friendly (?:with|for|to|towards)(?: the)? {_WHO}",
            f"(?:bring|take)(?: (?:the|your|all))*(?: whole| entire)? {_WHO}",
        ),
    },
}

_NEUTRAL_PHRASES: tuple[str, ...] = (
    "(?:not|never)(?: (?:come|comes|too|very|that|so|overly|exactly|particularly))*"
    " (?:expensive|cheap|pricey|pricy|costly)",
    "less expensive",
    "not (?:have|has|give|gives|get|gets|receive|receives|hold|holds)(?: it| them)?(?: a| an)?"
    "(?: very| particularly| so| that)? (?:high|highly|well|good|great)",
    "on average",
    "not(?: (?:be|been|very|so|that|too|rated|reviewed))* (?:highly|well|high)(?: (?:rated|reviewed))?",
    "(?:above|below|higher than|lower than|more than|less than|cheaper than)(?: the)? average",
    f"average(?: {_PRICED}| {_RATED})?(?: for a meal| per (?:person|head|meal|dish))?"
    f"(?: is| are| of| being)?(?={_AMOUNT_NEXT})",
    "(?:prices|ratings?) average",
    f"(?:north|south|east|west|outside|out|edge|outskirts|away|far|near|nearby|close|next)(?: of| from| to)?"
    f"(?: the)? {_CITY_CENTRE}",
    f"(?:a )?(?:mile|miles|minutes?)(?: away)? from(?: the)? {_CITY_CENTRE}",
)
"""Phrases that win their span in overlap resolution but mention no value (see the module docstring)."""


def _compile(fragments: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(f"{_START}(?:{'|'.join(fragments)}){_END}")


_RULES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    *(
        (slot, band, _compile(fragments))
        for slot, bands in _PHRASES.items()
        for band, fragments in bands.items()
    ),
    (_NEUTRAL, _NEUTRAL, _compile(_NEUTRAL_PHRASES)),
)
_COPULA_EAT_TYPE = re.compile(
    rf"{_START}(?:is|are|its) an?(?: (?!(?:pub|coffee|cafe){_END})\w+){{0,3}} (pub|coffee ?shop|cafe){_END}"
)
_APOSTROPHE_NT = re.compile(r"n\s*['’`]\s*t\b")
_OUT_OF_FIVE = re.compile(r"\s*/\s*(5|five)\b")
_APOSTROPHE = re.compile(r"\s*['’`]\s*(?=s\b)|['’`]")
_NON_WORD = re.compile(r"[^\w£]+|_+")
_MR = re.compile(r"\s*[^\[\],]+\[[^\[\]]*\](?:\s*,\s*[^\[\],]+\[[^\[\]]*\])*\s*")
_MR_ITEM = re.compile(r"([^\[\],]+)\[([^\[\]]*)\]")
_BRACKET_STEP = {"[": 1, "]": -1}


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class SlotCheck:
    """How one text renders the slots of one MR: realised, missed and contradicted list MR slots in MR
    order; added lists the closed slots the MR lacks but the text mentions, in :data:`SLOTS` order."""

    realised: tuple[str, ...]
    missed: tuple[str, ...]
    contradicted: tuple[str, ...]
    added: tuple[str, ...] = ()

    @property
    def errors(self) -> int:
        """Missed, contradicted and added slots: this text's contribution to the slot error rate."""
        return len(self.missed) + len(self.contradicted) + len(self.added)


# ------------------------------------------------------------------------------------------ parsing


def parse_mr(mr: str) -> dict[str, str]:
    """Parse an E2E MR such as ``"name[Blue Spice], area[city centre]"`` into ``{slot: value}`` in order.

    Raises :class:`DataError` (one line, quoting the MR) on anything :func:`check_slots` could not score:
    no items, unbalanced brackets, text outside ``slot[value]`` items, an unknown or repeated slot, an
    empty value, or a value outside a closed slot's value set.
    """
    if not _balanced(mr):
        raise DataError(f"MR has unbalanced or nested brackets: {mr!r}")
    if not _MR_ITEM.search(mr):
        raise DataError(f"MR has no slot[value] items: {mr!r}")
    if not _MR.fullmatch(mr):
        raise DataError(f"MR has text outside its comma-separated slot[value] items: {mr!r}")
    parsed: dict[str, str] = {}
    for match in _MR_ITEM.finditer(mr):
        _add_item(parsed, match.group(1).strip(), match.group(2).strip(), mr)
    return parsed


def _balanced(mr: str) -> bool:
    """Whether every "[" is closed by a "]" before the next "[" (E2E values hold no brackets)."""
    depth = 0
    for char in mr:
        depth += _BRACKET_STEP.get(char, 0)
        if depth not in (0, 1):
            return False
    return depth == 0


def _add_item(parsed: dict[str, str], slot: str, value: str, source: object) -> None:
    if slot not in SLOTS:
        raise DataError(f"MR has unknown slot {slot!r} (known: {', '.join(SLOTS)}): {source!r}")
    if slot in parsed:
        raise DataError(f"MR repeats slot {slot!r}: {source!r}")
    if not normalise(value):
        raise DataError(f"MR has an empty value (no letters or digits) for slot {slot!r}: {source!r}")
    if slot not in OPEN_SLOTS and value.lower() not in BANDS[slot]:
        known = ", ".join(BANDS[slot])
        raise DataError(f"MR has unknown value {value!r} for slot {slot!r} (known: {known}): {source!r}")
    parsed[slot] = value


def _as_mr(mr: Mapping[str, str] | str) -> dict[str, str]:
    if isinstance(mr, str):
        return parse_mr(mr)
    parsed: dict[str, str] = {}
    for slot, value in mr.items():
        _add_item(parsed, slot, value.strip(), dict(mr))
    if not parsed:
        raise DataError(f"MR has no slots: {dict(mr)!r}")
    return parsed


# ------------------------------------------------------------------------------------------ matching


def normalise(text: str) -> str:
    """Text as the rules see it: no accents, lower case, ``n't`` → `` not``, ``/5`` → ``out of 5``, no
    apostrophes, every other non-word character except ``£`` a single space, stripped."""
    decomposed = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    text = _OUT_OF_FIVE.sub(r" out of \1", _APOSTROPHE_NT.sub(" not", text))
    return _NON_WORD.sub(" ", _APOSTROPHE.sub("", text)).strip()


def _name_forms(value: str) -> tuple[str, ...]:
    """A name and, when it starts with "the", the name without it; longest first."""
    norm = normalise(value)
    return (norm, norm[4:]) if norm.startswith("the ") and len(norm) > 4 else (norm,)


def _contains(padded: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs as whole words, also with an "s" added (plural, possessive)."""
    return f" {phrase} " in padded or f" {phrase}s " in padded


def _mask(norm_text: str, names: Sequence[str]) -> str:
    """Blank out the given names (whole words), so their words mention no value of a closed slot."""
    padded = f" {norm_text} "
    forms = sorted({form for name in names for form in _name_forms(name)}, key=len, reverse=True)
    for form in forms:
        padded = padded.replace(f" {form} ", " § ")
    return padded.strip()


def _mentions(masked: str) -> dict[str, set[str]]:
    """Slot → the bands its phrases mention in ``masked``, after leftmost-longest overlap resolution."""
    matches = sorted(
        (m.start(), -m.end(), slot, band) for slot, band, pattern in _RULES for m in pattern.finditer(masked)
    )
    found: dict[str, set[str]] = {}
    end = 0
    for start, neg_end, slot, band in matches:
        if start >= end:
            end = -neg_end
            if slot != _NEUTRAL:
                found.setdefault(slot, set()).add(band)
    return found


def _verdict(slot: str, value: str, mentioned: set[str]) -> str:
    band = BANDS[slot][value.lower()]
    rivals = {other for other in mentioned - {band} if (slot, other) not in GENERIC}
    if rivals:
        return "contradicted"
    return "realised" if band in mentioned else "missed"


# ------------------------------------------------------------------------------------------ public API


def check_slots(mr: Mapping[str, str] | str, text: str) -> SlotCheck:
    """Say, for each slot of ``mr`` (a parsed dict or an MR string), whether ``text`` realises, misses or
    contradicts it, and which closed slots it adds, by the rules in this module's docstring."""
    slots = _as_mr(mr)
    norm = normalise(text)
    padded = f" {norm} "
    names = [value for slot, value in slots.items() if slot in OPEN_SLOTS]
    mentions = _mentions(_mask(norm, [*names, *MASKED_VENUES]))
    verdicts: dict[str, list[str]] = {"realised": [], "missed": [], "contradicted": []}
    for slot, value in slots.items():
        if slot in OPEN_SLOTS:
            found = any(_contains(padded, form) for form in _name_forms(value))
            verdict = "realised" if found else "missed"
        else:
            verdict = _verdict(slot, value, mentions.get(slot, set()))
        verdicts[verdict].append(slot)
    added = tuple(
        slot
        for slot in SLOTS
        if slot not in slots and any((slot, band) not in GENERIC for band in mentions.get(slot, ()))
    )
    return SlotCheck(*(tuple(verdicts[key]) for key in ("realised", "missed", "contradicted")), added)


def slot_error_rate(mrs: Sequence[str], texts: Sequence[str]) -> float:
    """(Missed + contradicted + added slots) summed over all pairs / all MR slots: the usual E2E SER.

    Pairs ``mrs[i]`` with ``texts[i]``; the two must have the same, non-zero length (:class:`ConfigError`
    otherwise), since a silent zip would score the wrong text against an MR.
    """
    if len(mrs) != len(texts):
        raise ConfigError(f"slot_error_rate needs one text per MR; got {len(mrs)} MRs and {len(texts)} texts")
    if not mrs:
        raise ConfigError("slot_error_rate needs at least one (MR, text) pair; got none")
    parsed = [parse_mr(mr) for mr in mrs]
    errors = sum(check_slots(slots, text).errors for slots, text in zip(parsed, texts, strict=True))
    return errors / sum(len(slots) for slots in parsed)


def references_error_rate(mrs: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """The slot error rate of every reference of every MR (``references[i]`` are those of ``mrs[i]``): the
    floor a generated text is measured against, as human references omit and add slots too."""
    pairs = [(mr, ref) for mr, refs in zip(mrs, references, strict=True) for ref in refs]
    return slot_error_rate([mr for mr, _ in pairs], [ref for _, ref in pairs])


def self_contradictions(text: str) -> tuple[str, ...]:
    """Slots on which ``text`` (no MR: an unconditional sample) states two incompatible values.

    Checks familyFriendly (yes and no), priceRange and customer rating (two bands) and eatType (two of
    pub / coffee shop, each after "is a"); see the module docstring. Returns slot names in :data:`SLOTS`
    order, empty for a consistent text.
    """
    masked = _mask(normalise(text), MASKED_VENUES)
    mentions = _mentions(masked)
    clashing = {
        slot
        for slot in ("priceRange", "customer rating", "familyFriendly")
        if len(mentions.get(slot, ())) > 1
    }
    stated = {
        kind.replace(" ", "").replace("cafe", "coffeeshop") for kind in _COPULA_EAT_TYPE.findall(masked)
    }
    if len(stated) > 1:
        clashing.add("eatType")
    return tuple(slot for slot in SLOTS if slot in clashing)
