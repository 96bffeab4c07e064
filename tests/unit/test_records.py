"""`records`, the dataclasses subset that runs on Python 3.6: its own contract, and on 3.7+ the
same observable behaviour as the standard library's ``dataclasses`` for the same class bodies."""

import importlib
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataone_cn_sslverify import records

try:  # imported by name: the 3.6 conversion rewrites `import dataclasses`, and 3.6 has none
    STDLIB: Any = importlib.import_module("dataclasses")
except ImportError:
    STDLIB = None

IMPLEMENTATIONS = [records] + ([STDLIB] if STDLIB is not None else [])


def define(dc: Any) -> Dict[str, Any]:
    """The same class bodies, decorated by ``dc`` (records or the standard library)."""

    @dc.dataclass(frozen=True)
    class Point:
        x: int
        y: int = 0
        label: str = ""
        scale: ClassVar[int] = 10

    @dc.dataclass
    class Bag:
        name: str
        items: List[str] = dc.field(default_factory=list)
        meta: Dict[str, int] = dc.field(default_factory=dict, compare=False, repr=False)

    @dc.dataclass(frozen=True)
    class Checked:
        kind: str

        def __post_init__(self) -> None:
            if self.kind not in ("a", "b"):
                raise ValueError("bad kind " + self.kind)

    @dc.dataclass
    class Nested:
        point: Point
        bags: List[Bag] = dc.field(default_factory=list)
        pairs: Tuple[Tuple[str, int], ...] = ()
        note: Optional[str] = None

    @dc.dataclass(frozen=True)
    class Point3(Point):
        z: int = 0

    return {"Point": Point, "Bag": Bag, "Checked": Checked, "Nested": Nested, "Point3": Point3}


def observe(dc: Any, x: int, y: int, label: str, items: List[str]) -> List[Any]:
    """Everything a caller can see, as plain values (class names and reprs included)."""
    C = define(dc)
    p = C["Point"](x, y, label)
    q = C["Point"](x, y=y, label=label)
    bag = C["Bag"]("b", list(items))
    n = C["Nested"](p, [bag], (("k", x),))
    seen: List[Any] = [repr(p), p == q, hash(p) == hash(q), p == (x, y, label), repr(bag),
                       bag == C["Bag"]("b", list(items), {"ignored": 1}), repr(C["Bag"]("e")),
                       dc.asdict(n), [f.name for f in dc.fields(n)], dc.is_dataclass(n), dc.is_dataclass(C["Nested"]),
                       repr(dc.replace(p, label="r")), repr(C["Point3"](x, y, label, 3)), C["Point"].scale,
                       "scale" in [f.name for f in dc.fields(C["Point"])]]
    try:
        p.x = 1
    except dc.FrozenInstanceError as e:
        seen.append(("frozen", str(e)))
    try:
        hash(bag)
    except TypeError:
        seen.append("unhashable")
    for call in (lambda: C["Checked"]("c"), lambda: dc.replace(C["Checked"]("a"), kind="z"), lambda: C["Point"]()):
        try:
            call()
        except (ValueError, TypeError) as e:
            seen.append(type(e).__name__)
    return seen


@settings(deadline=None, max_examples=50)  # each example defines five classes twice
@given(st.integers(), st.integers(), st.text(max_size=5), st.lists(st.text(max_size=3), max_size=3))
def test_same_as_the_standard_library(x: int, y: int, label: str, items: List[str]) -> None:
    if STDLIB is None:
        pytest.skip("no dataclasses on this Python to compare with (the contract tests below still run)")
    assert observe(records, x, y, label, items) == observe(STDLIB, x, y, label, items)


def test_contract() -> None:
    C = define(records)
    p = C["Point"](1, 2, "a")
    assert repr(p).endswith("Point(x=1, y=2, label='a')")
    assert p == C["Point"](1, 2, "a") and p != C["Point"](1, 3, "a") and hash(p) == hash(C["Point"](1, 2, "a"))
    with pytest.raises(records.FrozenInstanceError):
        p.x = 5
    with pytest.raises(records.FrozenInstanceError):
        del p.y
    a, b = C["Bag"]("x"), C["Bag"]("x")
    a.items.append("i")
    assert b.items == [] and a.items == ["i"]  # one fresh list per instance
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(ValueError, match="bad kind"):
        records.replace(C["Checked"]("a"), kind="c")
    n = C["Nested"](p, [a])
    d = records.asdict(n)
    assert d == {"point": {"x": 1, "y": 2, "label": "a"}, "bags": [{"name": "x", "items": ["i"], "meta": {}}],
                 "pairs": (), "note": None}
    d["bags"][0]["items"].append("copy")
    assert a.items == ["i"]  # asdict copies
    assert [f.name for f in records.fields(C["Point3"])] == ["x", "y", "label", "z"]


def test_refuses_what_dataclasses_refuses() -> None:
    for dc in IMPLEMENTATIONS:
        with pytest.raises(ValueError):
            @dc.dataclass
            class Shared:
                items: List[int] = []  # noqa: RUF012 - the point of the test
        with pytest.raises(TypeError):
            @dc.dataclass
            class Order:
                a: int = 0
                b: int  # type: ignore[misc]
        with pytest.raises(ValueError):
            dc.field(default=1, default_factory=list)
        with pytest.raises(TypeError):
            dc.asdict(1)
