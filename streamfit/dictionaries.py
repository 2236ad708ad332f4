"""Labels and categorical values as data: per-row screening with reasons, and the dictionaries a version keeps.

``LabelDictionary`` maps multiclass labels to class indices 0..k-1; ``CategoryDictionary`` maps
each categorical field's values to fixed pandas categories (XGBoost's native categories: a
value unseen at training time becomes missing, and is counted). Both speak
``snapshot()``/``restore()`` so a version stores them with its model. Every check is over whole
columns (numpy/pandas); only a column mixing types (objects, bools, numbers and text) is looked
at value by value. ``streamfit.task`` says which checks a task runs.

Example:
    >>> labels = LabelDictionary.fit(["cat", "dog", "cat", "emu"])
    >>> labels.classes, labels.encode(["dog", "yak"])[1].tolist()
    (['cat', 'dog', 'emu'], ['', 'bad_label:unknown_class'])
    >>> cats = CategoryDictionary({"country": ["de", "fr"]})
    >>> cats.encode(pd.DataFrame({"country": ["fr", "it"]}))["country"].tolist(), cats.unseen
    (['fr', nan], {'country': 1})
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

BAD_LABEL = "bad_label"  # the binary reason, as schema.validate names it today
_CLEAN_KINDS = {"string", "integer", "floating", "mixed-integer-float", "decimal", "empty"}


def as_series(values: Any) -> pd.Series:
    """Values as a Series from 0 (a list keeps its Python objects: numpy would make [True, 2] two ints)."""
    if isinstance(values, pd.Series):
        return values.reset_index(drop=True)
    if isinstance(values, np.ndarray):
        return pd.Series(values)
    return pd.Series(list(values), dtype=object)


def not_of_type(s: pd.Series, missing: np.ndarray, text_only: bool) -> np.ndarray:
    """Rows present whose value is not text (``text_only``) or not text nor a number (bools never count).

    A column pandas infers as all text or all numbers is judged at once; only a mixed column
    (rare: a client sending objects, lists or bools) is checked value by value.
    """
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind == "boolean":
        return ~missing
    if kind in _CLEAN_KINDS:
        return ~missing & (text_only and kind not in ("string", "empty"))
    allowed = (str,) if text_only else (str, int, float, np.integer, np.floating)
    ok = s.map(lambda v: isinstance(v, allowed) and not isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
    return ~missing & ~ok


def screen_labels(values: Any, text_ok: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(number per row, NaN where none; missing mask; wrong-type mask) of a label column.

    ``text_ok``: a string that is no number is a label (multiclass class names), not a wrong type.
    """
    s = as_series(values)
    if pd.api.types.is_bool_dtype(s.dtype):
        missing = np.zeros(len(s), dtype=bool)
        return np.full(len(s), np.nan), missing, ~missing
    if pd.api.types.is_numeric_dtype(s.dtype):
        num = s.to_numpy(dtype=np.float64, na_value=np.nan)
        return num, np.isnan(num), np.zeros(len(s), dtype=bool)
    missing = s.isna().to_numpy(dtype=bool)
    wrong = not_of_type(s, missing, text_only=False)
    num = pd.to_numeric(s.where(~wrong), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if not text_ok:
        wrong |= ~missing & np.isnan(num)
    return num, missing, wrong


def first_reasons(n: int, rules: Sequence[tuple[np.ndarray, str]]) -> np.ndarray:
    """One reason per row, '' when fine: the first rule a row breaks names it."""
    reason = np.full(n, "", dtype=object)
    for mask, why in reversed(rules):
        reason[mask] = why
    return reason


def label_reasons(num: np.ndarray, missing: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Reason per screened label ('' when fine): ``bad_label:missing``, ``:wrong_type``, then ``:non_finite``."""
    return first_reasons(len(num), [(missing, f"{BAD_LABEL}:missing"), (wrong, f"{BAD_LABEL}:wrong_type"),
                                    (np.isinf(num), f"{BAD_LABEL}:non_finite")])


# -- dictionaries ------------------------------------------------------------------------------

def label_keys(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(canonical class key per row; reason per row) of multiclass labels: 2, 2.0 and "2" are one class, "2".

    >>> label_keys([2, "2.0", "b", 1.5, float("nan"), True])[0].tolist()
    ['2', '2', 'b', '1.5', '', '']
    """
    s = as_series(values)
    num, missing, wrong = screen_labels(s, text_ok=True)
    numeric = pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)
    keys = np.full(len(s), "", dtype=object) if numeric else s.astype(str).to_numpy(dtype=object)
    finite = np.isfinite(num)
    whole = finite & (num == np.floor(num)) & (np.abs(num) < 2.0 ** 53)
    keys[whole] = num[whole].astype(np.int64).astype(str)
    keys[finite & ~whole] = num[finite & ~whole].astype(str)
    reason = label_reasons(num, missing, wrong)
    keys[reason != ""] = ""
    return keys, reason


def _class_order(key: str) -> tuple[int, float, str]:
    """Numeric classes first, by value (so classes 0..k-1 get indices 0..k-1), then names in text order."""
    try:
        value = float(key)
    except ValueError:
        return (1, 0.0, key)
    return (0, value, key) if math.isfinite(value) else (1, 0.0, key)


class LabelDictionary:
    """Multiclass labels <-> class indices 0..k-1, in a stable order (a version's is stored with it).

    Built from training labels (``fit``); ``extend`` appends new classes without renumbering old ones.
    A label outside the dictionary is refused with ``bad_label:unknown_class``.

    >>> d = LabelDictionary.fit([3, 1, 2, 1])
    >>> d.classes, d.encode(["2", 7.0])[0].tolist(), d.decode(np.array([2, 0])).tolist()
    (['1', '2', '3'], [1.0, nan], ['3', '1'])
    """

    def __init__(self, classes: Sequence[Any] = ()) -> None:
        keys, reason = label_keys(classes)
        if (reason != "").any():
            raise ValueError(f"not a class: {np.asarray(classes, dtype=object)[reason != ''].tolist()[:5]}")
        self.classes: list[str] = list(dict.fromkeys(keys.tolist()))  # the given order: a stored dictionary's

    @classmethod
    def fit(cls, labels: Any) -> LabelDictionary:
        """The dictionary of every valid label in ``labels`` (bad ones are left out)."""
        d = cls()
        d.extend(labels)
        return d

    def extend(self, labels: Any) -> list[str]:
        """Add the classes of ``labels`` not known yet (in class order, after the known ones); returns them."""
        keys, reason = label_keys(labels)
        known = set(self.classes)
        new = sorted({k for k in pd.unique(keys[reason == ""]) if k not in known}, key=_class_order)
        self.classes.extend(new)
        return new

    def __len__(self) -> int:
        return len(self.classes)

    def encode(self, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """(class index per row as a float, NaN when bad; reason per row, '' when fine)."""
        keys, reason = label_keys(labels)
        codes = pd.Index(self.classes, dtype=object).get_indexer(keys)
        reason[(codes < 0) & (reason == "")] = f"{BAD_LABEL}:unknown_class"
        return np.where(reason == "", codes, np.nan).astype(float), reason

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Class key of each class index."""
        return np.asarray(self.classes, dtype=object)[np.asarray(codes, dtype=np.int64)]

    def diff(self, other: LabelDictionary) -> str:
        """What differs from ``other`` in a few words ('' when the same classes in the same order)."""
        if self.classes == other.classes:
            return ""
        gone, added = sorted(set(self.classes) - set(other.classes)), sorted(set(other.classes) - set(self.classes))
        parts = [f"classes only here: {gone}" if gone else "", f"classes only there: {added}" if added else ""]
        return "; ".join(p for p in parts if p) or "the same classes in another order"

    def snapshot(self) -> dict[str, Any]:
        """The classes in index order."""
        return {"classes": list(self.classes)}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the classes with a snapshot's."""
        self.classes = [str(c) for c in snap["classes"]]


class CategoryDictionary:
    """Per categorical field, its values <-> codes, as pandas categoricals XGBoost takes natively.

    ``fit`` learns each field's categories from training rows (sorted, missing left out); ``encode``
    turns those fields into ``pd.Categorical`` columns with exactly those categories, so codes mean
    the same at training and serving time. A value unseen at training time becomes missing and is
    counted in ``unseen`` (per field).

    >>> d = CategoryDictionary.fit(pd.DataFrame({"country": ["fr", "de", "fr"], "x": [1.0, 2.0, 3.0]}), ["country"])
    >>> out = d.encode(pd.DataFrame({"country": ["de", "xx", None], "x": [0.0, 0.0, 0.0]}))
    >>> out["country"].cat.codes.tolist(), d.unseen
    ([0, -1, -1], {'country': 1})
    """

    def __init__(self, categories: Mapping[str, Sequence[str]] | None = None) -> None:
        self.categories: dict[str, list[str]] = {f: [str(v) for v in c] for f, c in (categories or {}).items()}
        self.unseen: dict[str, int] = {f: 0 for f in self.categories}
        self._built: dict[str, tuple[pd.Index, pd.CategoricalDtype]] = {}  # per field, built on first use

    @classmethod
    def fit(cls, frame: pd.DataFrame | Mapping[str, Any], fields: Sequence[str]) -> CategoryDictionary:
        """Each of ``fields``' distinct text values in ``frame``, sorted (missing and non-text values left out)."""
        cats = {}
        for f in fields:
            s = as_series(frame[f])
            keep = ~s.isna().to_numpy(dtype=bool)
            keep &= ~not_of_type(s, ~keep, text_only=True)
            cats[f] = sorted(pd.unique(s[keep].astype(str).to_numpy(dtype=object)).tolist())
        return cls(cats)

    @property
    def fields(self) -> list[str]:
        """The categorical fields, in the order they were given."""
        return list(self.categories)

    def dtype(self, field: str) -> pd.CategoricalDtype:
        """The fixed categorical dtype of ``field``."""
        return self._index_and_dtype(field)[1]

    def _index_and_dtype(self, field: str) -> tuple[pd.Index, pd.CategoricalDtype]:
        # Built once per category list (restore replaces the lists and clears these): every scored request
        # and every refit encodes, and a new dtype validates and hashes all its categories again.
        if field not in self._built:
            index = pd.Index(self.categories[field], dtype=object)
            self._built[field] = (index, pd.CategoricalDtype(index))
        return self._built[field]

    def encode(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``frame`` with each categorical field as a fixed-category column; unseen values -> missing,
        counted (an absent field is all missing)."""
        out, unseen = self.encode_marked(frame)
        for f, rows in unseen.items():
            self.unseen[f] += int(rows.sum())
        return out

    def encode_marked(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        """``encode``'s frame and, per field, which rows held a value never seen (not counted here: serving
        counts them per Router, ``RouterCore.unseen``)."""
        out, unseen = frame.copy(), {}
        for f in self.categories:
            s = as_series(frame[f]) if f in frame.columns else pd.Series([None] * len(frame), dtype=object)
            index, dtype = self._index_and_dtype(f)
            codes = index.get_indexer(s.to_numpy(dtype=object))
            unseen[f] = (codes < 0) & ~s.isna().to_numpy(dtype=bool)
            out[f] = pd.Categorical.from_codes(codes, dtype=dtype)
        return out, unseen

    def diff(self, other: CategoryDictionary) -> str:
        """What differs from ``other`` in a few words ('' when every field has the same categories)."""
        parts = []
        for f in sorted(set(self.categories) | set(other.categories)):
            mine, theirs = self.categories.get(f), other.categories.get(f)
            if mine is None or theirs is None:
                parts.append(f"{f}: categorical {'there' if mine is None else 'here'} only")
            elif mine != theirs:
                gone, added = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
                parts.append(f"{f}: {len(gone)} categories only here {gone[:5]}, {len(added)} only there {added[:5]}")
        return "; ".join(parts)

    def snapshot(self) -> dict[str, Any]:
        """The categories per field and the unseen counts."""
        return {"categories": {f: list(c) for f, c in self.categories.items()}, "unseen": dict(self.unseen)}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the categories and counts with a snapshot's."""
        self.categories = {f: [str(v) for v in c] for f, c in snap["categories"].items()}
        self.unseen = {f: int(snap.get("unseen", {}).get(f, 0)) for f in self.categories}
        self._built.clear()


def check_categories(values: Any, field: str, allowed: Sequence[str] | None = None) -> np.ndarray:
    """Reason per row ('' when fine) for a categorical field: ``not_categorical:<field>`` for a value
    that is not text, ``unknown_category:<field>`` for text outside ``allowed`` (when given); missing is fine here.

    >>> check_categories(["fr", 3, None, "zz"], "country", allowed=["fr", "de"]).tolist()
    ['', 'not_categorical:country', '', 'unknown_category:country']
    """
    s = as_series(values)
    missing = s.isna().to_numpy(dtype=bool)
    wrong = not_of_type(s, missing, text_only=True)
    rules = [(wrong, f"not_categorical:{field}")]
    if allowed is not None:
        outside = pd.Index(list(allowed), dtype=object).get_indexer(s.to_numpy(dtype=object)) < 0
        rules.append((~missing & outside, f"unknown_category:{field}"))
    return first_reasons(len(s), rules)
