"""Settings and strategies shared by the fuzz tests: a hypothesis profile bounded so the
whole directory runs in well under a minute on two busy cores, and mutations of valid
messages (a field dropped, added, retyped, made huge, nested deep, given odd unicode; bytes
truncated, flipped, inserted, cut out).

`GPUX_FUZZ_SCALE=20 pytest tests/fuzz` fuzzes twenty times longer; under CI=true the runs
are derandomized so a landing is never blocked by a find it did not cause.
"""

from __future__ import annotations

import os
import re
from typing import Any, Final

import msgspec
import msgspec.inspect as inspect
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.protocol_strategies import INT64_MAX, INT64_MIN, choice_values, int64_bounds

_SCALE: Final = max(1.0, float(os.environ.get("GPUX_FUZZ_SCALE", "1")))
_IN_CI: Final = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

settings.register_profile(
    "gpux-fuzz",
    deadline=None,
    derandomize=_IN_CI,
    database=None if _IN_CI else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)


def fuzz(examples: int) -> settings:
    """The fuzz profile with `examples` examples (times GPUX_FUZZ_SCALE)."""
    return settings(settings.get_profile("gpux-fuzz"), max_examples=int(examples * _SCALE))


# --- values ------------------------------------------------------------------------------------

odd_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "\x00", "\n", "é", "ß", "٣", "²", "🚀", "\u202e", "\ufeff",
                     "a" * 65, "x" * 300, "gpux.fence", "USDC", "0x" + "f" * 40, "1e3", "-0"]),
)
huge_ints = st.one_of(
    st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 2**64, -(2**64),
                     2**53, 2**53 + 1, -1, 0]),
    st.integers(min_value=2**63, max_value=2**64 - 1),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(INT64_MIN, 2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), odd_text)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


def nested(depth: int, leaf: Any = 0) -> Any:
    """A value nested `depth` levels deep, alternating lists and objects."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


deep_values = st.integers(min_value=20, max_value=60).map(nested)
wrong_values = st.one_of(scalars, huge_ints, deep_values, st.lists(scalars, max_size=3),
                         st.dictionaries(st.text(max_size=4), scalars, max_size=2))


# --- mutations ---------------------------------------------------------------------------------

MUTATIONS: Final = ("drop", "add", "retype", "huge", "deep", "unicode")


@st.composite
def mutated_object(draw: st.DrawFn, raw: dict[str, Any],
                   protected: tuple[str, ...] = ()) -> tuple[dict[str, Any], str, str]:
    """Return (a copy of `raw` broken in one way, the field touched, how)."""
    fields = [name for name in raw if name not in protected]
    how = draw(st.sampled_from(MUTATIONS if fields else ("add",)))
    changed = dict(raw)
    if how == "add":
        name = draw(st.text(min_size=1, max_size=10).filter(lambda n: n not in raw))
        changed[name] = draw(json_values)
        return changed, name, how
    name = draw(st.sampled_from(fields))
    if how == "drop":
        del changed[name]
    else:
        changed[name] = draw({"retype": wrong_values, "huge": huge_ints, "deep": deep_values,
                              "unicode": odd_text}[how])
    return changed, name, how


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """Return `data` truncated, with bytes flipped, inserted or cut out, or duplicated."""
    how = draw(st.sampled_from(["truncate", "flip", "insert", "cut", "repeat", "replace"]))
    at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
    if how == "truncate":
        return data[:at]
    if how == "flip":
        mask = draw(st.integers(min_value=1, max_value=255))
        return data[:at] + bytes([data[at] ^ mask]) + data[at + 1:] if data else b"\xff"
    if how == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if how == "cut":
        return data[:at] + data[at + draw(st.integers(min_value=1, max_value=16)):]
    if how == "repeat":
        return data + data[at:]
    return draw(st.binary(max_size=64))


def json_path_names(message: str, field: str) -> bool:
    """Whether msgspec's error `message` is about `field` of the top-level object."""
    quoted = re.escape(field)
    return bool(re.search(rf"at `\$\.{quoted}(?:[.\[`])|field `{quoted}`", message))


# --- values from type information --------------------------------------------------------------


def values_of(info: inspect.Type) -> st.SearchStrategy[Any]:
    """A strategy for values msgspec accepts for one field type, as plain JSON-able values."""
    if isinstance(info, inspect.IntType):
        low, high = int64_bounds(info)
        return st.integers(min_value=low, max_value=high)
    if isinstance(info, inspect.StrType):
        if info.pattern is not None:
            return st.from_regex(info.pattern, fullmatch=True).filter(
                lambda text: re.search(info.pattern, text) is not None)
        return st.text(min_size=info.min_length or 0, max_size=min(info.max_length or 20, 20))
    if isinstance(info, inspect.FloatType):
        return st.floats(allow_nan=False, allow_infinity=False)
    choice = choice_values(info, values_of)
    if choice is not None:
        return choice
    if isinstance(info, (inspect.ListType, inspect.TupleType, inspect.VarTupleType)):
        return _sequences(info)
    if isinstance(info, inspect.DictType):
        return st.dictionaries(values_of(info.key_type), values_of(info.value_type), max_size=3)
    if isinstance(info, inspect.StructType):
        return raw_structs(info.cls)
    if isinstance(info, inspect.AnyType):
        return json_values
    raise AssertionError(f"no strategy for {info!r}: extend values_of")


def _sequences(info: inspect.Type) -> st.SearchStrategy[Any]:
    if isinstance(info, inspect.TupleType):
        return st.tuples(*(values_of(item) for item in info.item_types)).map(list)
    assert isinstance(info, (inspect.ListType, inspect.VarTupleType))
    return st.lists(values_of(info.item_type), min_size=info.min_length or 0,
                    max_size=min(info.max_length or 4, 4))


def raw_structs(struct_type: type[msgspec.Struct]) -> st.SearchStrategy[dict[str, Any]]:
    """Valid instances of a Struct as the plain dicts its JSON form decodes to."""
    info = inspect.type_info(struct_type)
    assert isinstance(info, inspect.StructType)
    required = {f.encode_name: values_of(f.type) for f in info.fields if f.required}
    optional = {f.encode_name: values_of(f.type) for f in info.fields if not f.required}
    tag = {info.tag_field: st.just(info.tag)} if info.tag_field is not None else {}
    return st.fixed_dictionaries({**tag, **required}, optional=optional)
