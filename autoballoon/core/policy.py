"""Policies: the typed, frozen knobs that classify() and decide() read.

Pure models only: loading TOML files lives in ``autoballoon.policyfiles``. Every field carries its
unit in its name and a docstring saying what it does and why the default is what it is; the
docstrings are what ``autoballoon check-policy --explain`` prints.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autoballoon.core.samples import MAX_GUEST_KIB, NO_TAGS, DomainTags
from autoballoon.core.units import KIB_PER_MIB

Mode = Literal["observe", "on-demand", "proactive"]


MAX_GUEST_MIB = MAX_GUEST_KIB // KIB_PER_MIB
"""The largest guest size policies are checked for (16 TiB, as the samples' gate)."""


def _larger(name: str, mib: int, ratio: float, size_mib: float) -> tuple[str, float]:
    """The effective mark (MiB) at ``size_mib`` and which field sets it: ``name_mib`` or
    ``name_ratio``, the larger of the two (the fixed amount on a tie)."""
    share = ratio * size_mib
    return (f"{name}_ratio", share) if share > mib else (f"{name}_mib", float(mib))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class GuestPolicy(_Frozen):
    """How one guest is sized. Defaults are the built-in ones; policy files override fields."""

    # --- what is allowed at all -------------------------------------------------------------
    mode: Mode = "on-demand"
    """`observe` never acts (classifies and reports only); `on-demand` inflates only while the
    host's MemAvailable is below the host reserve; `proactive` takes every MiB a guest can spare.
    Deflating a guest under pressure happens in every mode except `observe`."""
    enabled: bool = True
    """false opts this guest out entirely: it is observed and reported, never resized."""
    priority: int = Field(default=50, ge=0, le=100)
    """0-100. When memory is taken, guests with a lower priority give first."""

    # --- bounds ------------------------------------------------------------------------------
    floor_mib: int = Field(default=128, ge=16)
    """Never inflate the balloon so far that the guest has less than this. 128 MiB keeps a
    minimal Linux guest alive; raise it for real workloads."""
    floor_ratio: float = Field(default=0.25, ge=0.0, le=1.0)
    """The floor is also at least this fraction of the guest's maximum (the larger wins)."""
    max_mib: int | None = Field(default=None, ge=16)
    """Never give the guest more than this (capped by the domain's own maximum). None: the
    domain's maximum."""
    startup_mib: int | None = Field(default=None, ge=16)
    """Bring a guest to this size when it is first seen, before it has filled its memory with
    page cache; it grows from there on demand (rescues, low water). Only memory that is free
    in the guest, beyond the headroom, is taken for it, so a guest already using its memory
    (a warm one, when the daemon starts) keeps it. None: no startup size. The larger of this
    and startup_ratio applies."""
    startup_ratio: float | None = Field(default=None, gt=0.0, le=1.0)
    """The startup size as a fraction of the guest's maximum."""

    # --- when a guest can afford to give -----------------------------------------------------
    headroom_mib: int = Field(default=64, ge=0)
    """Memory the guest keeps available (MemAvailable) after an inflation. The larger of this
    and headroom_ratio applies. It is what absorbs a sudden allocation between two ticks."""
    headroom_ratio: float = Field(default=0.15, ge=0.0, le=0.9)
    """Headroom as a fraction of the guest's current balloon size."""
    low_water_mib: int = Field(default=32, ge=0)
    """Below this much available memory the guest is given memory back (medium step) before
    any stall shows. Must stay below the headroom: the gap between them is the dead band. Both
    are checked as applied (the larger of _mib and _ratio) at every guest size from floor_mib
    to max_mib."""
    low_water_ratio: float = Field(default=0.07, ge=0.0, le=0.9)
    """Low-water mark as a fraction of the current balloon size (the larger wins)."""
    stable_s: float = Field(default=20.0, ge=0.0)
    """A guest must stay in class `none` this long before it is inflated."""
    cooldown_s: float = Field(default=15.0, ge=0.0)
    """After any change to a guest, no inflation for this long (lets the guest settle and its
    statistics catch up: stats arrive once per stats period)."""
    pressure_block_s: float = Field(default=300.0, ge=0.0)
    """After a deflate caused by pressure, no inflation for this long (the guest just showed
    it needs the memory; taking it again soon is how controllers oscillate)."""
    external_hold_s: float = Field(default=600.0, ge=0.0)
    """After someone else (an operator's `virsh setmem`) changes the balloon, leave the guest's
    size alone this long, except to rescue it from pressure."""

    # --- step sizes --------------------------------------------------------------------------
    inflate_step_ratio: float = Field(default=0.05, gt=0.0, le=1.0)
    """Largest inflation per change, as a fraction of the guest's maximum: take slowly."""
    deflate_medium_ratio: float = Field(default=0.15, gt=0.0, le=1.0)
    """Deflation for `global-reclaim`, low available memory and a stalled inflation."""
    deflate_large_ratio: float = Field(default=0.40, gt=0.0, le=1.0)
    """Deflation for `oom` and `thrashing`: give back at once and generously."""
    min_change_mib: int = Field(default=8, ge=0)
    """Changes smaller than this are not made (they cost a balloon round-trip for nothing)."""
    stuck_after_s: float = Field(default=10.0, gt=0.0)
    """An inflation whose balloon `actual` has not reached the target after this long is
    stalled: the guest cannot give more. It is backed off and not retried below that size."""

    # --- classification thresholds (rates over rate_window_s) --------------------------------
    rate_window_s: float = Field(default=10.0, gt=0.0)
    """Rates are measured over the samples of this window (and never across our own last
    change, so evidence already acted upon is not acted upon twice)."""
    stale_after_s: float = Field(default=10.0, gt=0.0)
    """Statistics older than this (QEMU's last-update) make the guest `unknown`. A guest whose
    reporting period is known (its balloon stats period) gets at least that period plus one
    tick: a guest reporting every 10 s is not stale between two reports."""
    stall_high_per_s: float = Field(default=0.2, ge=0.0)
    """alloc-stalls per second at or above which STALL is high (h). 0.2/s = one stall every
    five seconds: a healthy guest shows none."""
    direct_scan_high_mib_per_s: float = Field(default=1.0, ge=0.0)
    """Direct-reclaim scanning at or above this rate is high (DSCAN h)."""
    async_scan_high_mib_per_s: float = Field(default=4.0, ge=0.0)
    """kswapd scanning at or above this rate is high (ASCAN h)."""
    reclaim_efficiency_low_ratio: float = Field(default=0.3, ge=0.0, le=1.0)
    """reclaimed/scanned below this is low (DRCLM l, ARCLM l): pages are scanned but not freed,
    which the seed reads as thrashing (direct) or struggling (kswapd)."""
    major_faults_high_per_s: float = Field(default=50.0, ge=0.0)
    """Guests without the 6.12 counters: major faults per second at or above this, with low
    available memory, read as thrashing (page cache and code being re-read from disk)."""
    swap_high_mib_per_s: float = Field(default=1.0, ge=0.0)
    """Guests without the 6.12 counters: swap-in at or above this reads as global-reclaim."""

    @model_validator(mode="after")
    def _coherent(self) -> GuestPolicy:
        self._dead_band_stays_open()
        if self.max_mib is not None and self.max_mib < self.floor_mib:
            raise ValueError(f"max_mib ({self.max_mib}) is below floor_mib ({self.floor_mib})")
        if self.startup_mib is not None and self.startup_mib < self.floor_mib:
            raise ValueError(
                f"startup_mib ({self.startup_mib}) is below floor_mib ({self.floor_mib}): a "
                "guest never goes under its floor; raise startup_mib or lower floor_mib"
            )
        if self.startup_ratio is not None and self.startup_ratio < self.floor_ratio:
            raise ValueError(
                f"startup_ratio ({self.startup_ratio}) is below floor_ratio "
                f"({self.floor_ratio}): a guest never goes under its floor; raise startup_ratio "
                "or lower floor_ratio"
            )
        return self

    def _dead_band_stays_open(self) -> None:
        """Low water below headroom at every balloon size the policy can meet, or refuse.

        Both marks are the larger of a fixed amount and a share of the size, so each is flat,
        then a line; their gap is smallest at the ends of the range of sizes (the floor_mib, and
        max_mib or the largest guest supported) or where one of them bends. Checking those
        sizes checks them all.
        """
        lo_mib, hi_mib = float(self.floor_mib), float(self.max_mib or MAX_GUEST_MIB)
        sizes = {lo_mib, hi_mib}
        for fixed, ratio in (
            (self.low_water_mib, self.low_water_ratio),
            (self.headroom_mib, self.headroom_ratio),
        ):
            if ratio > 0 and lo_mib < fixed / ratio < hi_mib:
                sizes.add(fixed / ratio)
        prev: tuple[float, float] | None = None  # (size, gap) at the last size that passed
        for size in sorted(sizes):
            low_field, low = _larger("low_water", self.low_water_mib, self.low_water_ratio, size)
            head_field, head = _larger("headroom", self.headroom_mib, self.headroom_ratio, size)
            if low < head:
                prev = (size, head - low)
                continue
            if prev is not None:  # the gap is linear in between: where it closes
                # (low - head) first: >= 0 here, so the divisor is at least the last gap, even
                # when that gap is far below the rounding error of the marks themselves.
                size = prev[0] + (size - prev[0]) * prev[1] / (prev[1] + (low - head))
            raise ValueError(
                f"{low_field} = {getattr(self, low_field)} is not below {head_field} = "
                f"{getattr(self, head_field)} on a {size:.0f} MiB guest: the dead band "
                "between the low-water mark and the headroom closes there and the controller "
                "would "
                f"oscillate. Lower {low_field} or raise {head_field} (each mark is the larger "
                "of its _mib and _ratio; checked from floor_mib to max_mib)"
            )

    # --- derived bounds, all in KiB -----------------------------------------------------------
    def max_kib(self, domain_max_kib: int) -> int:
        cap = (
            domain_max_kib
            if self.max_mib is None
            else min(domain_max_kib, self.max_mib * KIB_PER_MIB)
        )
        return max(cap, 0)

    def floor_kib(self, domain_max_kib: int) -> int:
        top = self.max_kib(domain_max_kib)
        return min(max(self.floor_mib * KIB_PER_MIB, int(self.floor_ratio * top)), top)

    def startup_kib(self, domain_max_kib: int) -> int | None:
        """The startup size (the larger of _mib and _ratio) within [floor, max]; None: none."""
        if self.startup_mib is None and self.startup_ratio is None:
            return None
        top = self.max_kib(domain_max_kib)
        want = max((self.startup_mib or 0) * KIB_PER_MIB, int((self.startup_ratio or 0) * top))
        return min(max(want, self.floor_kib(domain_max_kib)), top)

    def headroom_kib(self, current_kib: int) -> int:
        return max(self.headroom_mib * KIB_PER_MIB, int(self.headroom_ratio * current_kib))

    def low_water_kib(self, current_kib: int) -> int:
        return max(self.low_water_mib * KIB_PER_MIB, int(self.low_water_ratio * current_kib))


class HostPolicy(_Frozen):
    """Host-wide settings used by `on-demand` mode."""

    reserve_ratio: float = Field(default=0.20, ge=0.0, le=0.95)
    """`on-demand` inflates guests only while host MemAvailable is below this fraction of host
    MemTotal (20 %, like oVirt MOM's threshold), and only as much as brings it back."""
    reserve_mib: int = Field(default=0, ge=0)
    """An absolute reserve in MiB; the larger of the two applies."""
    fit: bool = True
    """`on-demand` keeps what the guests could still grow into (their free memory) within what
    the host can give above its reserve: when their free memory exceeds it, the excess is taken
    from them at once (`take-fit`), before they touch it, lowest priority first and in
    proportion to what each can give; it goes back once the host has room. On a host whose
    guests fit in it, this never acts. false: on-demand takes only once the host is short."""

    def reserve_kib(self, mem_total_kib: int) -> int:
        return max(self.reserve_mib * KIB_PER_MIB, int(self.reserve_ratio * mem_total_kib))


class Match(_Frozen):
    """Which guests a per-VM policy file applies to."""

    names: tuple[str, ...] = ()
    """Exact domain names, or shell globs (`web-*`, `db[0-9]`). Exact names win over globs."""
    uuids: tuple[str, ...] = ()
    """Domain UUIDs (case-insensitive); a UUID match counts as exact."""
    flavors: tuple[str, ...] = ()
    """OpenStack Nova flavor names, or globs (`m1.*`), read from the domain's Nova metadata
    (`<nova:flavor name=...>`). Wins over a name glob, loses to an exact name or UUID."""

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if not self.names and not self.uuids and not self.flavors:
            raise ValueError("a [match] table needs at least one of `names`, `uuids` or `flavors`")
        return self

    def specificity(self, name: str, uuid: str, flavor: str = "") -> int:
        """The precedence this file has for the guest: ``EXACT`` for its name or UUID,
        ``FLAVOR`` for its Nova flavor, ``GLOB`` for a name glob, 0 for no match."""
        if name in self.names or uuid.lower() in (u.lower() for u in self.uuids):
            return EXACT
        if flavor and any(fnmatch.fnmatchcase(flavor, p) for p in self.flavors):
            return FLAVOR
        if any(_is_glob(p) and fnmatch.fnmatchcase(name, p) for p in self.names):
            return GLOB
        return 0


GLOB, FLAVOR, CHOSEN, EXACT = 1, 2, 3, 4
"""Precedence of a per-VM file for one guest, lowest first: a name glob, the Nova flavor, the
file the domain's own metadata names (``DomainTags.policy``), an exact name or UUID. The
domain's own field values (``DomainTags.overrides``) come last, above them all."""
_LEVEL_NAMES = {GLOB: "glob", FLAVOR: "flavor", EXACT: "exact name/UUID"}


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


# --- do two globs match a common name? ----------------------------------------------------------
# A glob as tokens: "*", or a one-character class: (chars, negated), "?" being ((), True).
_Token = str | tuple[frozenset[str], bool]
_SAMPLE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_.ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _tokens(pattern: str) -> tuple[_Token, ...]:
    """fnmatch's syntax: *, ?, [abc], [a-z], [!abc]; an unclosed [ is a literal."""
    out: list[_Token] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            if not out or out[-1] != "*":
                out.append("*")
        elif ch == "?":
            out.append((frozenset(), True))
        elif (
            ch == "[" and (end := pattern.find("]", i + 1 if pattern[i : i + 1] in "!]" else i)) > 0
        ):
            body, i = pattern[i:end], end + 1
            negated = body.startswith("!")
            body = body[1:] if negated else body
            chars: set[str] = set()
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    chars.update(chr(c) for c in range(ord(body[k]), ord(body[k + 2]) + 1))
                    k += 3
                else:
                    chars.add(body[k])
                    k += 1
            out.append((frozenset(chars), negated))
        else:
            out.append((frozenset(ch), False))
    return tuple(out)


def _class_head(rest: str) -> int:
    """Characters after "[" that cannot close the class: a "!" and then a first "]"."""
    head = 1 if rest.startswith("!") else 0
    return head + 1 if rest[head : head + 1] == "]" else head


def _accepts(token: tuple[frozenset[str], bool], ch: str) -> bool:
    chars, negated = token
    return (ch in chars) != negated


def _common_char(a: tuple[frozenset[str], bool], b: tuple[frozenset[str], bool]) -> str | None:
    """A character both one-character tokens accept, or None."""
    candidates = sorted(a[0] if not a[1] else b[0] if not b[1] else set()) or _SAMPLE_CHARS
    return next((c for c in candidates if _accepts(a, c) and _accepts(b, c)), None)


def common_name(pattern_a: str, pattern_b: str) -> str | None:
    """A name both globs match (fnmatch, case-sensitive), or None when no name can.

    A walk over both patterns at once: a "*" either ends or takes one character the other
    pattern's token accepts. Pure; used to refuse policy files whose globs overlap."""
    a, b = _tokens(pattern_a), _tokens(pattern_b)
    memo: dict[tuple[int, int], str | None] = {}

    def walk(i: int, j: int) -> str | None:
        if (i, j) in memo:
            return memo[i, j]
        found: str | None = None
        ta = a[i] if i < len(a) else None
        tb = b[j] if j < len(b) else None
        if ta is None and tb is None:
            found = ""
        elif ta == "*":
            found = walk(i + 1, j)
            if found is None and tb is not None:
                rest = walk(i, j + 1)
                if rest is not None:
                    found = rest if tb == "*" else _any_char(tb) + rest
        elif tb == "*":
            found = walk(i, j + 1)
            if found is None and ta is not None:
                rest = walk(i + 1, j)
                if rest is not None:
                    found = _any_char(ta) + rest
        elif ta is not None and tb is not None:
            assert not isinstance(ta, str) and not isinstance(tb, str)
            ch = _common_char(ta, tb)
            if ch is not None:
                rest = walk(i + 1, j + 1)
                if rest is not None:
                    found = ch + rest
        memo[i, j] = found
        return found

    return walk(0, 0)


def _any_char(token: _Token) -> str:
    assert not isinstance(token, str)
    return _common_char(token, (frozenset(), True)) or "x"


@dataclass(frozen=True)
class PolicyLayer:
    """One per-VM file: where it came from, what it matches, and the fields it overrides."""

    source: str
    match: Match
    overrides: dict[str, object]


class AmbiguousPolicy(ValueError):
    """Two policy files match the same guest with the same precedence."""


@dataclass(frozen=True)
class Overlap:
    """Two per-VM files that would both match one guest at the same precedence."""

    first: str
    second: str
    patterns: tuple[str, str]
    example: str
    kind: str = "glob"
    """What both files match on: "glob", "flavor" or "exact name/UUID"."""

    def __str__(self) -> str:
        pa, pb = self.patterns
        what = "Nova flavor" if self.kind == "flavor" else "guest"
        return (
            f"{self.first} ({pa!r}) and {self.second} ({pb!r}) both match {what} "
            f"{self.example!r}: it is matched by a {self.kind} in more than one policy file "
            f"({self.first}, {self.second}); make one of them more specific"
        )


def overlaps(layers: tuple[PolicyLayer, ...]) -> list[Overlap]:
    """Pairs of files that some guest name would match at one precedence (resolve() would
    raise AmbiguousPolicy for it): the same exact name or UUID, or two globs with a name in
    common. A name listed exactly in a third file still counts: the globs overlap elsewhere."""
    found = []
    for i, one in enumerate(layers):
        for other in layers[i + 1 :]:
            hit = _overlap(one.match, other.match)
            if hit is not None:
                pa, pb, example, kind = hit
                found.append(Overlap(one.source, other.source, (pa, pb), example, kind))
    return found


def _overlap(a: Match, b: Match) -> tuple[str, str, str, str] | None:
    exact_a = {n for n in a.names if not _is_glob(n)} | {u.lower() for u in a.uuids}
    exact_b = {n for n in b.names if not _is_glob(n)} | {u.lower() for u in b.uuids}
    for same in sorted(exact_a & exact_b):
        return same, same, same, "exact name/UUID"
    for kind, globs_a, globs_b in (
        ("glob", [n for n in a.names if _is_glob(n)], [n for n in b.names if _is_glob(n)]),
        ("flavor", list(a.flavors), list(b.flavors)),  # flavors: a precedence of their own
    ):
        for pa in globs_a:
            for pb in globs_b:
                example = common_name(pa, pb)
                if example is not None:
                    return pa, pb, example, kind
    return None


@dataclass(frozen=True)
class PolicySet:
    """The default policy, the host policy and the per-VM layers, resolved per guest.

    Precedence: built-in defaults < default file < a name glob < a Nova flavor < the file the
    domain's metadata names < an exact name/UUID < the domain's metadata field values. Two files
    matching one guest at the same precedence is an error (AmbiguousPolicy), never a guess.
    """

    default: GuestPolicy = GuestPolicy()
    host: HostPolicy = HostPolicy()
    layers: tuple[PolicyLayer, ...] = ()
    default_source: str = "(built-in defaults)"
    _cache: dict[tuple[str, str, DomainTags], GuestPolicy | ValueError] = field(
        default_factory=dict, compare=False, repr=False
    )

    def resolve_cached(self, name: str, uuid: str = "", tags: DomainTags = NO_TAGS) -> GuestPolicy:
        """``resolve`` memoised per (name, uuid, tags): a tick resolves every guest, every tick."""
        key = (name, uuid, tags)
        hit = self._cache.get(key)
        if hit is None:
            try:
                hit = self.resolve(name, uuid, tags)[0]
            except ValueError as err:  # AmbiguousPolicy or an incoherent merge
                hit = err
            self._cache[key] = hit
        if isinstance(hit, ValueError):
            raise hit
        return hit

    def resolve(
        self, name: str, uuid: str = "", tags: DomainTags = NO_TAGS
    ) -> tuple[GuestPolicy, tuple[str, ...]]:
        """The effective policy for a guest and the files it came from, most general first."""
        by_level: dict[int, list[PolicyLayer]] = {GLOB: [], FLAVOR: [], CHOSEN: [], EXACT: []}
        for layer in self.layers:
            level = layer.match.specificity(name, uuid, tags.flavor)
            if level:
                by_level[level].append(layer)
        if tags.policy:
            chosen = [layer for layer in self.layers if _stem(layer.source) == tags.policy]
            if not chosen:
                raise AmbiguousPolicy(
                    f"guest {name!r}: its libvirt metadata asks for policy {tags.policy!r}, "
                    f"and no per-VM file is called {tags.policy}.toml; add it or fix the "
                    "domain's <autoballoon:policy name=...>"
                )
            by_level[CHOSEN] = chosen[:1]
        merged = self.default.model_dump()
        sources = [self.default_source]
        for level in (GLOB, FLAVOR, CHOSEN, EXACT):
            found = by_level[level]
            if len(found) > 1:
                files = ", ".join(layer.source for layer in found)
                raise AmbiguousPolicy(
                    f"guest {name!r} is matched by a {_LEVEL_NAMES[level]} in more than one "
                    f"policy file ({files}); make one of them more specific"
                )
            if found:
                merged.update(found[0].overrides)
                sources.append(found[0].source)
        if tags.overrides:
            merged.update(dict(tags.overrides))
            sources.append("the domain's <autoballoon:policy> metadata")
        return GuestPolicy.model_validate(merged), tuple(sources)


def _stem(source: str) -> str:
    """A policy file's name without directory and ``.toml``: what domain metadata names."""
    return PurePath(source).stem
