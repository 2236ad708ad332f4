"""What the model's task changes in a shard: label-history columns per task, and categorical fields as text.

``TaskColumns`` is the one place a ``FeatureShard`` asks about ``model.task`` and the
categorical fields (issue 15):

- **Labels.** Binary and regression labels go in the label store as one value; a multiclass
  label (its class index, as ``check_columns`` gives it) as the index followed by one 0/1
  indicator per class, so the window mean of indicator ``i`` is class ``i``'s rate. Label-history
  columns (``FeaturesConfig.feature_names(model)``) are read from the same point-in-time window
  query as the binary ones: binary ``label_last``, rate and count; regression ``label_last``,
  mean, std (sample, like ``<f>_std_<w>``) and count; multiclass ``label_last`` (the index),
  a rate per class and count. Only labels that arrived before the event count, in ``[t - W, t)``.
- **Categorical fields travel as text.** Design choice: the float matrices the shard keeps
  (window values, pending vectors, served vectors) hold NaN in a categorical field's raw
  column, and the text rides beside them in an object matrix (one column per categorical
  field, None = missing): ``PendingRows.cats``, ``ServedLog``'s ``cats``, checkpoint columns
  ``c0``, ``c1``… of ``pending.arrow``/``served.arrow``, and the lookup's ``LookupResult.text``.
  A row leaving the shard (training row, lookup answer, recent events) has the event's own text
  in that column. Chosen over interning codes in the float matrix: no dictionary to share
  between the batch thread and lookup threads, to merge and renumber on a reshard, or to
  prune; and a config without categorical fields carries an empty (n, 0) matrix: nothing. For a window's
  ``<field>_distinct_<w>`` the window store keeps a categorical field as a stable hash of its text (a
  float: for ``distinct`` codes are only compared, never read back).
- **A categorical ``<field>_last`` is read back as text** (``CategoryTexts``). The window store answers
  ``last`` (the entity's latest row strictly before the event: any age, the lateness rules and the
  idle-entity expiry of every other feature) with the hash code; a bounded map code -> text per shard
  turns it back into the category, the moment the row is computed (training rows, pending and served
  vectors, lookups), so the model row carries text in ``<field>_last`` like in a raw categorical column
  (``FeaturesConfig.categorical_columns``). Chosen over carrying the text per entity beside the store:
  the latest text per entity cannot answer "strictly before t" for a late event or a lookup at an older
  time, while a code in the store row is exactly as old as the row, whatever the store does with it.
  The map is bounded (``TEXT_CAP`` categories per shard): when full, it drops the codes no stored row
  holds any more; a category beyond the cap after that is not kept and its ``<field>_last`` is
  missing, counted (``category_text_over_cap``). It is persisted (``texts.arrow``; a checkpoint written
  before it has none and restores with an empty map, which is all a config without a categorical
  ``last`` needs), merged on a reshard (union) and published with each lookup view (its arrays are
  replaced, never written, like the store's).
- **Checkpoints of another task are refused.** A shard's snapshot meta says its task and
  categorical fields (``fingerprint``, absent for binary without categorical fields, as
  every checkpoint written before); ``check`` refuses a snapshot of another task, class list or
  categorical-field set, naming both, instead of reading label rows of another width.

Example:
    >>> import numpy as np
    >>> from streamfit.config import FeaturesConfig, ModelConfig
    >>> tc = TaskColumns(FeaturesConfig(), ModelConfig(task="multiclass", classes=["a", "b", "c"]))
    >>> tc.label_values(np.array([2.0, 0.0])).tolist()
    [[2.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]
    >>> texts = CategoryTexts()
    >>> codes = texts.add(np.array(["fr", None, "de"], dtype=object))
    >>> texts.get(codes).tolist(), texts.get(np.array([np.nan, 1.0])).tolist()
    (['fr', None, 'de'], [None, None])
    >>> tc.check({"task": {"task": "binary", "classes": None, "categorical": []}})
    Traceback (most recent call last):
    ...
    streamfit.actors.stream.checkpoint.CheckpointError: the checkpoint was written for task binary, this config is task multiclass (classes ['a', 'b', 'c']): start from an empty checkpoint store (or use the config it was written with)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from streamfit.config import FeaturesConfig, ModelConfig
from streamfit.schema import ENTITY, EVENT_ID, EVENT_TIME, LABEL, hash_keys


TEXT_CAP = 65_536  # categories a shard can read back from codes (a categorical <field>_last), at most
PRUNE_EVERY = 32  # a full map drops unreferenced codes at most once per this many batches that overflow it


def text_codes(text: np.ndarray) -> np.ndarray:
    """The window store's value for categorical text: a stable hash as a float, NaN for missing."""
    text = np.asarray(text, dtype=object)
    missing = pd.isna(text)
    return np.where(missing, np.nan, hash_keys(np.where(missing, "", text)).astype(np.float64))


class CategoryTexts:
    """Code -> text of the categories a shard's window rows hold, at most ``cap`` (a ``Stateful``).

    The state is one tuple of sorted arrays, rebound whole on a change and never written: a ``frozen`` view (a
    lookup's) keeps the map as it was, and a reader never sees half an update.
    """

    def __init__(self, cap: int = TEXT_CAP) -> None:
        self.cap = cap
        self._state: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.empty(0, object))
        self._wait = 0  # full batches to go before the next prune (a prune that freed too little waits)
        self.dropped = 0  # categories the last ``add`` could not keep: their rows' last text is missing

    def __len__(self) -> int:
        return len(self._state[0])

    def frozen(self) -> "CategoryTexts":
        """A map sharing this state as it is now; later adds never change it."""
        view = CategoryTexts(self.cap)
        view._state = self._state
        return view

    def add(self, text: np.ndarray, referenced: Callable[[], np.ndarray] | None = None) -> np.ndarray:
        """The codes of ``text`` (``text_codes``), keeping each new category's text; when the map is full, the
        codes neither ``referenced()`` nor ``text`` holds are dropped first. Returns the codes."""
        codes, self.dropped = text_codes(text), 0
        have = ~np.isnan(codes)
        seen, first = np.unique(codes[have], return_index=True)
        new = ~self._has(seen)
        if not new.any():
            return codes
        full = len(self) + int(new.sum()) > self.cap
        if full and referenced is not None and self._wait == 0:
            self._wait = PRUNE_EVERY  # the rows still hold too many categories: not again for a while
            st = self._state
            keep = np.isin(st[0], referenced()) | np.isin(st[0], seen)
            self._state = (st[0][keep], st[1][keep])
        self._wait = max(self._wait - 1, 0) if full else 0
        room = max(0, self.cap - len(self))
        self.dropped = max(0, int(new.sum()) - room)
        self._merge(seen[new][:room], np.asarray(text, dtype=object)[have][first][new][:room])
        return codes

    def _has(self, codes: np.ndarray) -> np.ndarray:
        have = self._state[0]
        pos = np.minimum(np.searchsorted(have, codes), max(len(have) - 1, 0))
        return (have[pos] == codes) if len(have) else np.zeros(len(codes), bool)

    def _merge(self, codes: np.ndarray, text: np.ndarray) -> None:
        if not len(codes):
            return
        all_codes, all_text = np.concatenate([self._state[0], codes]), np.concatenate([self._state[1], text])
        order = np.argsort(all_codes, kind="stable")
        self._state = (all_codes[order], all_text[order])

    def get(self, codes: np.ndarray) -> np.ndarray:
        """The text of each code (None for NaN or a code not kept), an object array."""
        have, text = self._state
        codes = np.asarray(codes, dtype=np.float64)
        out = np.full(len(codes), None, dtype=object)
        if len(have):
            pos = np.minimum(np.searchsorted(have, codes), len(have) - 1)
            hit = have[pos] == codes
            out[hit] = text[pos[hit]]
        return out

    def snapshot(self) -> dict[str, Any]:
        """The map as two arrays, sorted by code, and the full batches to go before the next prune."""
        return {"codes": self._state[0], "texts": self._state[1], "wait": self._wait}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the map with a snapshot's (or several merged, ``merge_texts``)."""
        self._state, self._wait = (np.zeros(0), np.empty(0, object)), int(snap.get("wait", 0))
        codes = np.asarray(snap.get("codes", []), dtype=np.float64)
        codes, first = np.unique(codes, return_index=True)
        self._merge(codes, np.asarray(snap.get("texts", []), dtype=object)[first])


def merge_texts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several shards' ``CategoryTexts`` snapshots as one (a reshard: every new shard may read any code)."""
    return {"codes": np.concatenate([np.asarray(p["codes"], np.float64) for p in parts] or [np.zeros(0)]),
            "texts": np.concatenate([np.asarray(p["texts"], object) for p in parts] or [np.empty(0, object)]),
            "wait": 0}


class TaskColumns:
    """The task's label layout and the categorical fields' text columns of one shard's config."""

    def __init__(self, cfg: FeaturesConfig, model: ModelConfig | None = None) -> None:
        self.task = "binary" if model is None else model.task
        self.classes = [str(c) for c in model.classes] if model is not None and model.classes else []
        self.fields = [f.name for f in cfg.fields]
        self.cat_fields = cfg.categorical_fields()  # input fields holding text
        self.cat_cols = cfg.categorical_columns(model)  # model-row columns holding text: those, then <field>_last
        self.numeric = [not f.categorical for f in cfg.fields]
        self.feature_names = cfg.feature_names(model)
        self.cat_pos = [self.feature_names.index(f) for f in self.cat_cols]  # their columns in a model row
        # Window values of a categorical field (distinct, last): a stable hash of its text as a float, NaN = missing.
        self.coded = [(j, f) for j, f in enumerate(cfg.aggregated_fields()) if f in self.cat_fields]
        last = {a.field for a in cfg.aggregates if a.last}
        self.read_back = [j for j, f in self.coded if f in last]  # their codes are read back as text (last)
        self.last_pos = [self.feature_names.index(f"{f}_last") for f in self.cat_fields if f in last]
        self.label_width = 1 + len(self.classes) if self.task == "multiclass" else 1
        self.label_std: bool | list[int] = [0] if self.task == "regression" else False
        self._empty: pd.DataFrame | None = None

    @property
    def n_cats(self) -> int:
        """How many text columns (categorical fields and their ``<field>_last``) rows carry."""
        return len(self.cat_cols)

    # -- labels ----------------------------------------------------------------------------------
    def label_values(self, labels: np.ndarray) -> np.ndarray:
        """The label store's rows for clean labels (multiclass: the index, then one indicator per class)."""
        labels = np.asarray(labels, np.float64)
        if self.task != "multiclass":
            return labels.reshape(-1, 1)
        onehot = (labels[:, None] == np.arange(len(self.classes))[None, :]).astype(np.float64)
        return np.column_stack([labels, onehot])

    def label_columns(self, lq: dict[str, Any], n_windows: int) -> list[np.ndarray]:
        """The label-history columns (feature-name order) from a label-store query."""
        cols = [lq["last"][:, 0]]
        for wi in range(n_windows):
            if self.task == "regression":
                cols += [lq["mean"][wi][:, 0], lq["std"][wi][:, 0]]
            elif self.task == "multiclass":
                cols += [lq["mean"][wi][:, 1 + i] for i in range(len(self.classes))]
            else:
                cols.append(lq["mean"][wi][:, 0])
            cols.append(lq["count"][wi].astype(np.float64))
        return cols

    # -- raw fields --------------------------------------------------------------------------------
    def raw(self, clean: dict[str, Any], rows: np.ndarray) -> np.ndarray:
        """The fields' float matrix of the ``rows`` (a mask) of the clean columns, NaN in categorical columns."""
        n = int(np.count_nonzero(rows))
        if not self.fields:
            return np.zeros((n, 0))
        return np.column_stack([clean[f][rows] if num else np.full(n, np.nan)
                                for f, num in zip(self.fields, self.numeric)])

    def text(self, clean: dict[str, Any], rows: np.ndarray, feats: np.ndarray, texts: CategoryTexts) -> np.ndarray:
        """The model rows' text matrix (n, n_cats), object (None = missing): the categorical fields of the ``rows``
        (a mask) of ``clean``, then each categorical ``<field>_last`` read back from its code in ``feats`` (the
        rows' model vectors), where it becomes NaN."""
        cols = [np.asarray(clean[f], dtype=object)[rows] for f in self.cat_fields]
        return self._stack(cols + self.last_text(feats, texts), int(np.count_nonzero(rows)))

    def last_text(self, feats: np.ndarray, texts: CategoryTexts, offset: int = 0) -> list[np.ndarray]:
        """Each categorical ``<field>_last`` column's text, read back from its code in ``feats`` (set to NaN there);
        ``offset``: how many columns of a model row ``feats`` leaves out at its start."""
        out = []
        for p in self.last_pos:
            out.append(texts.get(feats[:, p - offset]))
            feats[:, p - offset] = np.nan
        return out

    @staticmethod
    def _stack(cols: list[np.ndarray], n: int) -> np.ndarray:
        return np.column_stack(cols).astype(object) if cols else np.empty((n, 0), dtype=object)

    def window_values(self, values: np.ndarray, clean: dict[str, Any], rows: np.ndarray,
                      texts: CategoryTexts | None = None, referenced: Callable[[], np.ndarray] | None = None
                      ) -> np.ndarray:
        """The window store's rows (the aggregated fields of ``rows``): a categorical field's column gets codes;
        those read back as ``<field>_last`` keep their text in ``texts`` (``CategoryTexts.add``)."""
        for j, f in self.coded:
            text = np.asarray(clean[f], dtype=object)[rows]
            values[:, j] = texts.add(text, referenced) if texts is not None and j in self.read_back else \
                text_codes(text)
        return values

    def nulls(self, clean: dict[str, Any], is_event: np.ndarray) -> dict[str, int]:
        """Missing values per field among event rows."""
        return {f: int(np.isnan(clean[f][is_event]).sum()) if num else
                int(pd.isna(np.asarray(clean[f], dtype=object)[is_event]).sum())
                for f, num in zip(self.fields, self.numeric)}

    def text_columns(self, cats: np.ndarray) -> dict[str, np.ndarray]:
        """Field -> text per row of a text matrix."""
        return {f: np.asarray(cats[:, i], dtype=object) for i, f in enumerate(self.cat_cols)}

    def text_series(self, cats: np.ndarray) -> dict[str, pd.Series]:
        """Field -> text per row as object Series: None stays None (pandas would make str columns with NaN)."""
        return {f: pd.Series(cats[:, i], dtype=object) for i, f in enumerate(self.cat_cols)}

    def frame(self, front: dict[str, Any], feats: np.ndarray, cats: np.ndarray,
              back: dict[str, Any] | None = None) -> pd.DataFrame:
        """Rows: the ``front`` columns, the model row (categorical columns as text), then ``back``."""
        cols = dict(front)
        cols.update(zip(self.feature_names, feats.T))
        cols.update(self.text_series(cats))
        cols.update(back or {})
        return pd.DataFrame(cols)  # one constructor: no inserts

    def row_columns(self) -> list[str]:
        """A training row's columns."""
        return [EVENT_ID, ENTITY, EVENT_TIME, *self.feature_names, LABEL]

    def empty_rows(self) -> pd.DataFrame:
        """A training-row frame with no rows (a copy of one built once: building it costs ~5 ms)."""
        if self._empty is None:
            text = {EVENT_ID, ENTITY, *self.cat_cols}
            self._empty = pd.DataFrame({c: pd.Series(dtype=object if c in text else float)
                                        for c in self.row_columns()})
        return self._empty.copy()

    # -- checkpoints -----------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any] | None:
        """What a snapshot's rows mean beyond numbers: None for binary without categorical fields (as always)."""
        if self.task == "binary" and not self.cat_fields:
            return None
        return {"task": self.task, "classes": self.classes or None, "categorical": list(self.cat_cols)}

    def check(self, meta: dict[str, Any]) -> None:
        """Refuse (``CheckpointError``) a snapshot whose meta was written for another task or categorical fields."""
        from streamfit.actors.stream.checkpoint import CheckpointError

        theirs = meta.get("task") or {"task": "binary", "classes": None, "categorical": []}
        mine = self.fingerprint() or {"task": "binary", "classes": None, "categorical": []}
        if theirs == mine:
            return
        raise CheckpointError(f"the checkpoint was written for {_describe(theirs)}, this config is {_describe(mine)}: "
                              "start from an empty checkpoint store (or use the config it was written with)")


def _describe(fp: dict[str, Any]) -> str:
    out = f"task {fp['task']}"
    if fp.get("classes"):
        out += f" (classes {fp['classes']})"
    if fp.get("categorical"):
        out += f" with categorical fields {fp['categorical']}"
    return out
