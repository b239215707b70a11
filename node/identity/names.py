"""Display names nobody can fake: when two names look alike, only one user may hold them.

Names are compared by canonical forms: NFKC (fullwidth and other compatibility forms fold
to plain letters), case folding and the confusable skeleton of Unicode Technical Standard
#39, computed by ICU's spoof checker (PyICU), which carries the Unicode consortium's data.
So "alice", "ALICE", "ａｌｉｃｅ" and "аlice" (with a Cyrillic а) are one name. Folding case
first loses that a capital I looks like a small l, so the skeleton taken before folding is a
second form: "aIice" is "alice" too. Two names clash when they share any form.

Before that, a name is refused when it could disguise itself at all (`refusal`): a
default-ignorable, unassigned or private character, a letter outside UTS #39's recommended
set (small capitals, mathematical letters), a mark left over on a Latin, Greek or Cyrillic
letter, or scripts mixed beyond ICU's moderately restrictive level.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable

import icu

from node.backends.presence import HeldName

# Characters that draw nothing though Unicode calls some of them letters: Hangul fillers,
# the blank Braille pattern, and the default-ignorable code points. A name must have a
# character outside these and outside white space, marks and controls.
INVISIBLE = frozenset(
    [0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0x034F, 0x00AD, 0x17B4, 0x17B5, 0xFEFF]
    + list(range(0x180B, 0x1810)) + list(range(0x200B, 0x2010)) + list(range(0x202A, 0x202F))
    + list(range(0x2060, 0x2070)) + list(range(0xFE00, 0xFE10))
)
_VISIBLE_CATEGORIES = ("L", "N", "P", "S")
_checker = icu.SpoofChecker()
# UTS #39's restriction level: a name's letters come from one script, or Latin with one
# other (Han and Japanese or Korean counting as one), the scripts people write names in;
# "pаypal" with a Cyrillic а is refused.
_restriction = icu.SpoofChecker()
_restriction.setRestrictionLevel(icu.URestrictionLevel.MODERATELY_RESTRICTIVE)
_restriction.setChecks(icu.USpoofChecks.RESTRICTION_LEVEL | icu.USpoofChecks.MIXED_NUMBERS)
# Letters of UTS #39's recommended identifier set: what modern writing uses. Small
# capitals, phonetic and mathematical letters (a "ᴀlice") are not in it.
_RECOMMENDED = _checker.getRecommendedUnicodeSet()
_UNSHOWABLE = (icu.UCharCategory.UNASSIGNED, icu.UCharCategory.PRIVATE_USE_CHAR,
               icu.UCharCategory.SURROGATE)
# Scripts whose accented letters all have composed forms: a mark left over after NFC on one
# of their letters is decoration or disguise ("alicė" with a combining dot).
_COMPOSED_SCRIPTS = frozenset((icu.UScriptCode.LATIN, icu.UScriptCode.GREEK,
                               icu.UScriptCode.CYRILLIC))
_MARKS = (icu.UCharCategory.NON_SPACING_MARK, icu.UCharCategory.ENCLOSING_MARK)


def visible(name: str) -> bool:
    """Whether the name shows at least one character."""
    return any(ord(char) not in INVISIBLE
               and unicodedata.category(char)[0] in _VISIBLE_CATEGORIES for char in name)


def refusal(name: str) -> str | None:
    """Why a name (in NFC) cannot be shown as one of many users' names, or None: it holds a
    character that draws nothing or may draw anything, an unusual letter, a stray mark, or
    letters of scripts that are not mixed."""
    base = None
    for char in name:
        if icu.Char.hasBinaryProperty(char, icu.UProperty.DEFAULT_IGNORABLE_CODE_POINT):
            return "an invisible character"
        kind = icu.Char.charType(char)
        if kind in _UNSHOWABLE:
            return "an unassigned or private character"
        if icu.Char.isalpha(char) and not _RECOMMENDED.contains(char):
            return "a letter that is not in common use"
        if kind in _MARKS and base in _COMPOSED_SCRIPTS:
            return "a mark that its letter has no composed form with"
        if kind not in _MARKS:
            base = icu.Script.getScript(char).getScriptCode()
    if _restriction.check(name):
        return "letters of scripts that are not mixed in one name"
    return None


def _skeleton(text: str) -> str:
    return str(_checker.getSkeleton(0, text))


def canonical(name: str) -> tuple[str, ...]:
    """The forms two names share when a reader could take one for the other."""
    shown = unicodedata.normalize(
        "NFKC", "".join(char for char in name if ord(char) not in INVISIBLE))
    forms = (_skeleton(shown.casefold()), _skeleton(shown).casefold())
    return tuple(dict.fromkeys(forms))


def held(names: Iterable[tuple[str, str]]) -> list[HeldName]:
    """What this node's connections hold, from their (display name, user id) pairs: what
    the node writes back into shared state when that state forgot it (a Redis restart, a
    lapsed heartbeat). Computed when needed (about 3 µs a name), so that an idle connection
    keeps no forms of its name."""
    connections = Counter((form, user_id) for name, user_id in names for form in canonical(name))
    return [HeldName(form, user_id, count) for (form, user_id), count in connections.items()]
