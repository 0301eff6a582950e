"""The latest values of one profile's devices as columns: one array per field, indexed by the
device's slot within its profile (api.live.state), so a value costs its machine width, not an
object.

Why: the cache held a `Reading` per device, a dict of its values, and a Python float (24 B), int
(28 B) or string per value: about 800 bytes a device, a million devices almost a gigabyte.
Here a number is 8 bytes in an `array('d')`, an integer 8 in an `array('q')`, and a boolean,
state or text value a 2-byte code into its column's table of distinct values (a state field has
a handful; a text field's table is bounded, see `MAX_CODES`). A value that does not fit its column
(the contract's type disagrees with what InfluxDB stored, which `api.core.readings.typed` passes
through as stored; an integer beyond 64 bits; text past the table's bound) is kept as it is in
the column's `odd` map, keyed by slot, at most one per device and field: nothing is lost or
changed by the compact form.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence

from api.core.readings import Value
from device_profiles import FieldType, Profile

# Codes of one column: 0 means absent, so 65,535 distinct values fit an array('H'). Past that a
# column's new values go to its `odd` map (bounded by its number of devices).
MAX_CODES = 0xFFFF
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


class Column:
    """One field of every device of a profile; `None` is absent."""

    __slots__ = ("odd", "present", "table", "values")

    def __init__(self, size: int) -> None:
        self.present = bytearray(size)
        self.odd: dict[int, Value] = {}
        self.values: array[int] | array[float] = array("d")
        # Codes: what each code stands for. None: the array holds the values themselves (an
        # array('d') item reads as a float, an array('q') item as an int).
        self.table: list[Value] | None = None

    def get(self, slot: int) -> Value | None:
        if self.present[slot]:
            stored = self.values[slot]
            return stored if self.table is None else self.table[int(stored)]
        return self.odd.get(slot) if self.odd else None

    def set(self, slot: int, value: Value | None) -> None:
        if self.odd:  # nearly always empty: every device's start-up load runs this per field
            self.odd.pop(slot, None)
        if value is None:
            self.present[slot] = 0
            return
        stored = self._encode(value)
        if stored is None:
            self.present[slot] = 0
            self.odd[slot] = value
        else:
            self.values[slot] = stored  # type: ignore[assignment]  # _encode fits its array
            self.present[slot] = 1

    def _encode(self, value: Value) -> int | float | None:
        raise NotImplementedError

    def load(self, slots: Sequence[int], values: Sequence[Value | None]) -> None:
        """Many devices' values as InfluxDB's JSON gave them, typed as api.core.readings.typed
        types them (a start's load from the latest rows, api.live.rows). One call a field and
        chunk, not a dict, a Reading and a typed() and set() call per device and field: those
        were 2.4 s of a 100,000-device load (cProfile), this is a loop."""
        for slot, value in zip(slots, values, strict=True):
            self.set(slot, value)


class Floats(Column):
    __slots__ = ()

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.values = array("d", bytes(8 * size))

    def _encode(self, value: Value) -> float | None:
        return value if type(value) is float else None

    def load(self, slots: Sequence[int], values: Sequence[Value | None]) -> None:
        present, stored, odd = self.present, self.values, self.odd
        for slot, value in zip(slots, values, strict=True):
            if odd:
                odd.pop(slot, None)
            kind = type(value)
            # JSON writes the float 42.0 as 42: a number field's int is its float.
            if kind is float or kind is int:
                stored[slot] = value  # type: ignore[assignment]  # array('d') takes an int
                present[slot] = 1
            else:
                self.set(slot, value)  # absent, or odd (a bool, a string)


class Ints(Column):
    __slots__ = ()

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.values = array("q", bytes(8 * size))

    def _encode(self, value: Value) -> int | None:
        return value if type(value) is int and INT_MIN <= value <= INT_MAX else None

    def load(self, slots: Sequence[int], values: Sequence[Value | None]) -> None:
        present, stored, odd = self.present, self.values, self.odd
        for slot, value in zip(slots, values, strict=True):
            if odd:
                odd.pop(slot, None)
            if type(value) is int and INT_MIN <= value <= INT_MAX:
                stored[slot] = value
                present[slot] = 1
            elif type(value) is float and value.is_integer() and INT_MIN <= value <= INT_MAX:
                stored[slot] = int(value)  # as typed(): an integer field's 3.0 is 3
                present[slot] = 1
            else:
                self.set(slot, value)


class Codes(Column):
    """Booleans, states and text: codes into the column's table of the distinct values seen.
    Keyed by (type, value) since True == 1 == 1.0 in a dict."""

    __slots__ = ("codes",)

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.values = array("H", bytes(2 * size))
        self.table = [False]  # code 0: absent, never read
        self.codes: dict[tuple[type, Value], int] = {}

    def _encode(self, value: Value) -> int | None:
        key = (type(value), value)
        code = self.codes.get(key)
        if code is None:
            table = self.table
            if table is None or len(table) > MAX_CODES:
                return None
            code = self.codes[key] = len(table)
            table.append(value)
        return code


_KINDS: Mapping[FieldType, type[Column]] = {
    FieldType.NUMBER: Floats,
    FieldType.INTEGER: Ints,
    FieldType.BOOLEAN: Codes,
    FieldType.STATE: Codes,
    FieldType.TEXT: Codes,
}


class ProfileColumns:
    """The latest values of `size` devices of one profile, a column per contract field."""

    __slots__ = ("_odd", "_plain", "columns")

    def __init__(self, profile: Profile, size: int) -> None:
        self.columns = {name: _KINDS[spec.type](size) for name, spec in profile.fields.items()}
        # A column's arrays, table and odd map are created once and only ever changed in place.
        self._plain = tuple((n, c.present, c.values, c.table) for n, c in self.columns.items())
        self._odd = tuple((n, c.odd) for n, c in self.columns.items())

    def values(self, slot: int) -> dict[str, Value]:
        """The device's values (those kept as they are last). One comprehension over the
        columns rather than Column.get per field: this runs for every device of an answer,
        60,000 for the GeoJSON of a city's streetlights, and took twice as long."""
        out: dict[str, Value] = {
            name: stored[slot] if table is None else table[int(stored[slot])]
            for name, present, stored, table in self._plain
            if present[slot]
        }
        for name, odd in self._odd:
            if odd and slot in odd:
                out[name] = odd[slot]
        return out

    def load(self, slots: Sequence[int], fields: Mapping[str, Sequence[Value | None]]) -> None:
        """Column.load for each field: `fields` holds a value (None: absent) per slot; a field
        it lacks is absent for them all, as replace() makes it."""
        absent = [None] * len(slots)
        for name, column in self.columns.items():
            column.load(slots, fields.get(name, absent))

    def fill_absent(
        self, rows: Iterable[tuple[int, Sequence[Value | None]]], fields: Mapping[str, int]
    ) -> None:
        """For each (slot, row), as InfluxDB's JSON gave it (the field `name` at `fields[name]`,
        None: absent): the row's values of the fields the device lacks, typed as load() types
        them. A field it holds keeps its value (api.live.state.load_rows says why)."""
        columns = [(at, self.columns[name]) for name, at in fields.items() if name in self.columns]
        for slot, row in rows:
            for at, column in columns:
                value = row[at]
                if value is not None and not column.present[slot] and slot not in column.odd:
                    column.load((slot,), (value,))

    def replace(self, slot: int, values: Mapping[str, Value]) -> None:
        """The device's values become `values` (fields outside the contract are not kept)."""
        for name, column in self.columns.items():
            column.set(slot, values.get(name))

    def merge(self, slot: int, values: Mapping[str, Value]) -> bool:
        """`values` over the device's current ones; True if any changed."""
        changed = False
        for name, value in values.items():
            column = self.columns.get(name)
            if column is not None and column.get(slot) != value:
                column.set(slot, value)
                changed = True
        return changed
