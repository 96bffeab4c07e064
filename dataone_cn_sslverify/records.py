"""Record classes for Python 3.6: the part of ``dataclasses`` this code base uses.

Why this module: CNs on Ubuntu 18.04 run Python 3.6, which has no
``dataclasses`` and no Debian/Ubuntu package of the backport. ``attrs`` would
add a runtime dependency whose 18.04 version (17.4) lacks half of today's
API; ``typing.NamedTuple`` records are tuples (equal to plain tuples,
iterable, no ``__post_init__``, no mutable records). So the records keep the
``dataclasses`` spelling (``@dataclass(frozen=True)``, ``field(default_factory=
list)``, ``replace``, ``asdict``) and only the import changes; the same code
runs on every interpreter from 3.6 to 3.13, and ``tests/unit/test_records.py``
checks it against the standard library where that exists.

Supported: ``dataclass(init, repr, eq, order, unsafe_hash, frozen)``,
``field(default, default_factory, init, repr, hash, compare, metadata)``,
``__post_init__``, inheritance between records, ``fields``, ``asdict``,
``replace``, ``is_dataclass`` and ``FrozenInstanceError``. Not supported
(the 3.6 converter refuses them rather than ignore them): ``InitVar``,
``KW_ONLY``, ``slots``, ``kw_only``, ``match_args``.
"""

import copy
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = ["FrozenInstanceError", "Field", "MISSING", "asdict", "dataclass", "field", "fields",
           "is_dataclass", "replace"]

_FIELDS = "__record_fields__"
_MUTABLE_DEFAULTS = (list, dict, set)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: No default (``field(default=MISSING)`` is a field without one).
MISSING: Any = _Missing()


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


class Field:
    """One field: its name, annotation (never evaluated) and options."""

    __slots__ = ("name", "type", "default", "default_factory", "init", "repr", "hash", "compare", "metadata")

    def __init__(self, default: Any, default_factory: Any, init: bool, repr: bool, hash: Optional[bool],
                 compare: bool, metadata: Optional[Dict[Any, Any]]) -> None:
        self.name = ""
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.hash = hash
        self.compare = compare
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return "Field(name={!r}, default={!r}, default_factory={!r})".format(
            self.name, self.default, self.default_factory)


def field(*, default: Any = MISSING, default_factory: Any = MISSING, init: bool = True, repr: bool = True,
          hash: Optional[bool] = None, compare: bool = True, metadata: Optional[Dict[Any, Any]] = None) -> Any:
    """A field with options, as in ``dataclasses.field``."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, init, repr, hash, compare, metadata)


def _is_classvar(annotation: Any) -> bool:
    """``ClassVar`` or ``ClassVar[...]``, as an object (its repr differs by version) or a string."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return annotation is typing.ClassVar or text.startswith(("ClassVar", "typing.ClassVar"))


def _collect(cls: type) -> Dict[str, Field]:
    """Fields of the bases (in MRO order), then the class's own annotations, in order."""
    found: Dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in getattr(base, _FIELDS, {}).values():
            found[f.name] = f
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(value, MISSING, True, True, None, True, None)
        f.name, f.type = name, annotation
        if isinstance(f.default, _MUTABLE_DEFAULTS):
            raise ValueError("mutable default {} for field {} is not allowed: use default_factory".format(
                type(f.default), name))
        if isinstance(value, Field):
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        found[name] = f
    return found


def _make_init(cls: type, flds: List[Field], frozen: bool) -> Callable[..., None]:
    env: Dict[str, Any] = {"MISSING": MISSING, "cls": cls}
    params: List[str] = []
    body: List[str] = []
    seen_default = False
    for f in flds:
        dname = "_default_" + f.name
        if f.init:
            if f.default is not MISSING:
                env[dname] = f.default
                params.append("{}={}".format(f.name, dname))
                seen_default = True
            elif f.default_factory is not MISSING:
                env[dname] = f.default_factory
                params.append("{}=MISSING".format(f.name))
                seen_default = True
            else:
                if seen_default:
                    raise TypeError("non-default argument {!r} follows default argument".format(f.name))
                params.append(f.name)
            if f.default_factory is not MISSING:
                value = "{0}() if {1} is MISSING else {1}".format(dname, f.name)
            else:
                value = f.name
        elif f.default_factory is not MISSING:
            env[dname] = f.default_factory
            value = dname + "()"
        elif f.default is not MISSING:
            env[dname] = f.default
            value = dname
        else:
            continue
        if frozen:
            body.append("    object.__setattr__(_self_, {!r}, {})".format(f.name, value))
        else:
            body.append("    _self_.{} = {}".format(f.name, value))
    if hasattr(cls, "__post_init__"):
        body.append("    _self_.__post_init__()")
    src = "def __init__(_self_{}):\n{}\n".format("".join(", " + p for p in params), "\n".join(body) or "    pass")
    exec(src, env)
    init = env["__init__"]
    init.__qualname__ = cls.__qualname__ + ".__init__"
    return init


def _set_if_absent(cls: type, name: str, value: Any) -> None:
    if name not in cls.__dict__:
        value.__qualname__ = "{}.{}".format(cls.__qualname__, name)
        setattr(cls, name, value)


def _process(cls: type, init: bool, repr_: bool, eq: bool, order: bool, unsafe_hash: bool, frozen: bool) -> type:
    all_fields = _collect(cls)
    setattr(cls, _FIELDS, all_fields)
    flds = list(all_fields.values())
    names = tuple(f.name for f in flds)
    compared = tuple(f.name for f in flds if f.compare)
    hashed = tuple(f.name for f in flds if (f.compare if f.hash is None else f.hash))

    def key(self: Any, which: Tuple[str, ...] = compared) -> Tuple[Any, ...]:
        return tuple(getattr(self, n) for n in which)

    if init:
        _set_if_absent(cls, "__init__", _make_init(cls, flds, frozen))
    if repr_:
        shown = tuple(f.name for f in flds if f.repr)

        def __repr__(self: Any) -> str:
            return "{}({})".format(type(self).__qualname__,
                                   ", ".join("{}={!r}".format(n, getattr(self, n)) for n in shown))
        _set_if_absent(cls, "__repr__", __repr__)
    if eq:
        def __eq__(self: Any, other: Any) -> Any:
            if other.__class__ is self.__class__:
                return key(self) == key(other)
            return NotImplemented
        _set_if_absent(cls, "__eq__", __eq__)
    if order:
        for name, op in (("__lt__", tuple.__lt__), ("__le__", tuple.__le__), ("__gt__", tuple.__gt__),
                         ("__ge__", tuple.__ge__)):
            def compare(self: Any, other: Any, op: Any = op) -> Any:
                if other.__class__ is self.__class__:
                    return op(key(self), key(other))
                return NotImplemented
            if name in cls.__dict__:
                raise TypeError("cannot overwrite attribute {} in class {}".format(name, cls.__name__))
            _set_if_absent(cls, name, compare)
    if frozen:
        def __setattr__(self: Any, name: str, value: Any) -> None:
            if type(self) is cls or name in names:
                raise FrozenInstanceError("cannot assign to field {!r}".format(name))
            super(cls, self).__setattr__(name, value)

        def __delattr__(self: Any, name: str) -> None:
            if type(self) is cls or name in names:
                raise FrozenInstanceError("cannot delete field {!r}".format(name))
            super(cls, self).__delattr__(name)
        for name, fn in (("__setattr__", __setattr__), ("__delattr__", __delattr__)):
            if name in cls.__dict__:
                raise TypeError("cannot overwrite attribute {} in class {}".format(name, cls.__name__))
            _set_if_absent(cls, name, fn)
    class_hash = cls.__dict__.get("__hash__", MISSING)
    explicit_hash = not (class_hash is MISSING or (class_hash is None and "__eq__" in cls.__dict__))

    def __hash__(self: Any) -> int:
        return hash(key(self, hashed))
    if unsafe_hash:
        if explicit_hash:
            raise TypeError("cannot overwrite attribute __hash__ in class {}".format(cls.__name__))
        cls.__hash__ = __hash__  # type: ignore[assignment]
    elif eq and not explicit_hash:
        cls.__hash__ = __hash__ if frozen else None  # type: ignore[assignment]
    return cls


def dataclass(cls: Optional[type] = None, *, init: bool = True, repr: bool = True, eq: bool = True,
              order: bool = False, unsafe_hash: bool = False, frozen: bool = False) -> Any:
    """Make ``cls`` a record, as ``dataclasses.dataclass`` does."""
    if order and not eq:
        raise ValueError("eq must be true if order is true")

    def wrap(c: type) -> type:
        return _process(c, init, repr, eq, order, unsafe_hash, frozen)
    return wrap if cls is None else wrap(cls)


def is_dataclass(obj: Any) -> bool:
    """Whether ``obj`` is a record class or instance."""
    return hasattr(obj if isinstance(obj, type) else type(obj), _FIELDS)


def fields(obj: Any) -> Tuple[Field, ...]:
    """The fields of a record class or instance, in definition order."""
    try:
        return tuple(getattr(obj, _FIELDS).values())
    except AttributeError:
        raise TypeError("must be called with a dataclass type or instance") from None


def _asdict_inner(obj: Any, dict_factory: Callable[..., Any]) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return dict_factory([(f.name, _asdict_inner(getattr(obj, f.name), dict_factory)) for f in fields(obj)])
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*[_asdict_inner(v, dict_factory) for v in obj])
    if isinstance(obj, (list, tuple)):
        return type(obj)(_asdict_inner(v, dict_factory) for v in obj)
    if isinstance(obj, dict):
        return type(obj)((_asdict_inner(k, dict_factory), _asdict_inner(v, dict_factory)) for k, v in obj.items())
    return copy.deepcopy(obj)


def asdict(obj: Any, *, dict_factory: Callable[..., Any] = dict) -> Any:
    """The record as a dict, recursively (records, lists, tuples, dicts), values deep-copied."""
    if not is_dataclass(obj) or isinstance(obj, type):
        raise TypeError("asdict() should be called on dataclass instances")
    return _asdict_inner(obj, dict_factory)


def replace(obj: Any, **changes: Any) -> Any:
    """A new record like ``obj`` with ``changes``, through ``__init__`` (so ``__post_init__`` runs)."""
    if not is_dataclass(obj) or isinstance(obj, type):
        raise TypeError("replace() should be called on dataclass instances")
    for f in fields(obj):
        if not f.init:
            if f.name in changes:
                raise ValueError("field {} is declared with init=False, it cannot be specified with "
                                 "replace()".format(f.name))
            continue
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return obj.__class__(**changes)
