"""Feature building shared by training and serving: one function, one behaviour, for any model.

The platform knows no model's columns. A model's input matrix is, in this order:

* the spec's numeric features (``features.numeric``), as float64;
* its stored features (``features.stored``), as float64 columns ``<view>__<feature>``: joined
  from the feature store before this code runs (training: the point-in-time training set);
* the model's *derived inputs*, defined in ``models/<name>/features.py`` beside the spec
  (optional: without that file a model takes its raw features only);
* the spec's categorical features, as integer codes in the order the spec lists their
  levels, so a code means the same thing at training and at serving time, whatever levels
  a batch happens to contain. Unknown or missing levels become NaN, which LightGBM treats
  as missing.

The feature contract of ``models/<name>/features.py``: each derived input is a plain, pure
function of column arrays, declared with :func:`derived` and the raw features it reads::

    import numpy as np
    from loopline.core.features import derived

    @derived(sources=("numerator", "denominator"))
    def ratio(c):
        return c["numerator"] / np.maximum(c["denominator"], 1.0)

(each demo model folder under ``models/`` has a complete example.)
``c`` maps each declared source to a float64 numpy array (a categorical source arrives as
its codes); the function returns one float per row. It gets only the columns it declared,
so the declarations are exactly what drift monitoring and reason codes use to map a derived
input back to raw inputs. Column arrays, not a DataFrame: the same code serves one row and
a million (:meth:`FeatureSet.build_arrays` needs no pandas at all).

Bump ``features.version`` in the spec whenever this module or the model's features.py
changes what the model sees.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loopline.core.errors import LooplineError

if TYPE_CHECKING:
    import pandas as pd

    from loopline.core.spec import ModelSpec

FEATURES_FILE = "features.py"
Columns = Mapping[str, np.ndarray]


class FeatureCodeError(LooplineError, ValueError):
    """A model's features.py breaks the feature contract; the message names the file and the function."""


@dataclass(frozen=True)
class Derived:
    """One derived input: its name (the function's), the raw features it reads, and the function."""

    name: str
    sources: tuple[str, ...]
    fn: Callable[[Columns], Any]


def derived(*, sources: tuple[str, ...] | list[str], name: str | None = None) -> Callable:
    """Declare a derived input computed from the given raw features (decorator for models/<name>/features.py)."""
    if isinstance(sources, str) or not sources:
        raise TypeError("derived(sources=...) takes a non-empty tuple of raw feature names")
    declared = tuple(sources)

    def mark(fn: Callable) -> Callable:
        fn.__loopline_derived__ = Derived(name or fn.__name__, declared, fn)  # type: ignore[attr-defined]
        return fn

    return mark


def import_by_path(path: str, prefix: str = "loopline_model_features") -> Any:
    """Import one code file by path, under a module name unique to that file (two files never clash).

    The one way Loopline imports code that lives beside a definition, not in the package: a
    model's ``features.py``, a feature view's ``compute`` file. Raises FeatureCodeError naming the file.
    """
    digest = hashlib.sha256(path.encode()).hexdigest()[:12]
    module_name = f"{prefix}_{Path(path).parent.name}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise FeatureCodeError(f"cannot import feature code {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(module_name, None)
        raise FeatureCodeError(f"{path} failed to import: {type(err).__name__}: {err}") from err
    return module


@lru_cache(maxsize=32)
def _load_module_derived(path: str, mtime_ns: int) -> tuple[Derived, ...]:
    """Import one features.py by path (``import_by_path``) and collect its derived inputs."""
    module = import_by_path(path)
    found = [v.__loopline_derived__ for v in vars(module).values() if hasattr(v, "__loopline_derived__")]
    names = [d.name for d in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FeatureCodeError(f"{path} defines derived inputs more than once: {duplicates}")
    return tuple(found)  # definition order (module dicts keep it)


@dataclass(frozen=True)
class FeatureSet:
    """A model's features: the spec's raw features plus the derived inputs of its features.py."""

    spec: ModelSpec
    derived: tuple[Derived, ...] = ()
    path: Path | None = None  # the features.py they came from, for error messages

    def __post_init__(self) -> None:
        raw = {*self.spec.features.names, *self.spec.features.stored_columns}
        for d in self.derived:
            if d.name in raw:
                raise FeatureCodeError(f"{self._where(d)}: derived input {d.name!r} has the name of a raw feature")
            unknown = [s for s in d.sources if s not in raw]
            if unknown:
                raise FeatureCodeError(
                    f"{self._where(d)}: sources {unknown} are not raw or stored features of model"
                    f" {self.spec.name!r} (spec features: {sorted(raw)})"
                )

    def _where(self, d: Derived) -> str:
        return f"{self.path or 'feature code'}, function {d.fn.__name__}()"

    @functools.cached_property
    def level_codes(self) -> dict[str, dict[str, float]]:
        """Categorical feature -> level -> its code (the level's position in the spec's list)."""
        return {
            name: {lv: float(i) for i, lv in enumerate(levels)}
            for name, levels in self.spec.features.categorical.items()
        }

    @functools.cached_property
    def columns(self) -> list[str]:
        """Model input columns, in the order the booster sees them."""
        f = self.spec.features
        return [*f.numeric, *f.stored_columns, *(d.name for d in self.derived), *f.categorical]

    @property
    def categorical(self) -> list[str]:
        return list(self.spec.features.categorical)

    @functools.cached_property
    def reason_key(self) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
        """(columns, derived sources) as hashable tuples: what reason codes are mapped by (scoring)."""
        return tuple(self.columns), tuple(sorted(self.sources.items()))

    @property
    def sources(self) -> dict[str, tuple[str, ...]]:
        """Derived input -> the raw features it is computed from (drift shares importance among them)."""
        return {d.name: d.sources for d in self.derived}

    def raw_arrays(self, raw: pd.DataFrame) -> dict[str, np.ndarray]:
        """Raw columns of a DataFrame as float64 arrays: numbers coerced, categoricals as spec-ordered codes.

        Raises KeyError naming the missing columns rather than producing a silently wrong matrix.
        """
        import pandas as pd

        f = self.spec.features
        missing = [c for c in f.names if c not in raw.columns]
        if missing:
            raise KeyError(f"raw data lacks feature columns: {missing}")
        stored = [c for c in f.stored_columns if c not in raw.columns]
        if stored:
            raise KeyError(
                f"raw data lacks stored feature columns {stored}: join them from the feature store first"
                " (FeatureStore.training_set)"
            )
        numeric = [*f.numeric, *f.stored_columns]
        cols = {name: pd.to_numeric(raw[name], errors="coerce").to_numpy(dtype="float64") for name in numeric}
        for name, codes in self.level_codes.items():
            cols[name] = raw[name].map(codes).to_numpy(dtype="float64", na_value=np.nan)
        return cols

    def value_arrays(self, values: Mapping[str, list]) -> dict[str, np.ndarray]:
        """Raw columns from validated request values (``None`` = missing) as ``raw_arrays`` makes them, without pandas.

        For the online path: a few applications' python values straight into float64 arrays,
        categoricals as the spec's codes (an unknown level is missing, as in ``raw_arrays``).
        """
        f = self.spec.features
        numeric = np.array(  # one array for all numeric columns (rows of it are the columns): one call, not one each
            [[np.nan if v is None else v for v in values[name]] for name in f.numeric], dtype="float64", ndmin=2
        )
        cols = dict(zip(f.numeric, numeric, strict=False))
        n = len(next(iter(values.values()), []))
        for name in f.stored_columns:  # looked up by the service (loopline.serving.stored); absent: missing
            given = values.get(name)
            cols[name] = (
                np.full(n, np.nan)
                if given is None
                else np.array([np.nan if v is None else v for v in given], "float64")
            )
        for name, codes in self.level_codes.items():
            cols[name] = np.array([codes.get(v, np.nan) for v in values[name]], dtype="float64")
        return cols

    def build_arrays(self, cols: Columns) -> dict[str, np.ndarray]:
        """All model inputs from raw column arrays (numeric values, categorical codes), in column order.

        No pandas: this is the path for one row as much as for a million.
        """
        f = self.spec.features
        out = {name: np.asarray(cols[name], dtype="float64") for name in [*f.numeric, *f.stored_columns]}
        n = len(next(iter(out.values()))) if out else None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # 0/0 is NaN, not a warning
            for d in self.derived:
                out[d.name] = self._derive(d, cols, n)
        for name in f.categorical:
            out[name] = np.asarray(cols[name], dtype="float64")
        return out

    def _derive(self, d: Derived, cols: Columns, n: int | None) -> np.ndarray:
        """One derived input, checked: a numeric array of one finite value or NaN per row."""
        inputs = {s: np.asarray(cols[s], dtype="float64") for s in d.sources}
        n = len(next(iter(inputs.values()))) if n is None else n
        try:
            value = d.fn(inputs)
        except KeyError as err:
            raise FeatureCodeError(
                f"{self._where(d)} reads column {err} it does not declare in sources={d.sources}"
            ) from err
        except Exception as err:
            raise FeatureCodeError(f"{self._where(d)} raised {type(err).__name__}: {err}") from err
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            kind = type(value).__name__ if not isinstance(value, np.ndarray) else f"array of {value.dtype}"
            raise FeatureCodeError(f"{self._where(d)} returned {kind}, expected a numeric numpy array")
        if value.shape != (n,):
            raise FeatureCodeError(f"{self._where(d)} returned shape {value.shape}, expected ({n},): one per row")
        value = value.astype("float64", copy=False)
        return np.where(np.isfinite(value), value, np.nan)  # NaN (missing), never inf

    def build(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Turn raw rows into the float matrix the model takes (a DataFrame with the raw index)."""
        import pandas as pd

        return pd.DataFrame(self.build_arrays(self.raw_arrays(raw)), index=raw.index)[self.columns]


def load_feature_code(model_dir: Path, spec: ModelSpec) -> FeatureSet:
    """The one loader: the model's features.py in ``model_dir`` (in the repo, or beside the service in a Bento).

    Without a features.py the model takes its raw features only.
    """
    path = os.path.join(os.fspath(model_dir), FEATURES_FILE)
    try:  # one stat per call: this runs for every scored request
        st = os.stat(path)
    except FileNotFoundError:
        return FeatureSet(spec)
    if not stat.S_ISREG(st.st_mode):
        return FeatureSet(spec)
    key = (id(spec), path, st.st_mtime_ns)
    cached = _SETS.get(key)
    if cached is None or cached[0] is not spec:  # validated once per spec and file version, not per request
        if len(_SETS) > 256:
            _SETS.clear()
        resolved = _resolved(path)
        cached = _SETS[key] = (spec, FeatureSet(spec, _load_module_derived(str(resolved), st.st_mtime_ns), resolved))
    return cached[1]


_SETS: dict[tuple, tuple[Any, FeatureSet]] = {}


@lru_cache(maxsize=64)
def _resolved(path: str) -> Path:
    return Path(path).resolve()


def feature_set(spec: ModelSpec) -> FeatureSet:
    """The feature set of a spec loaded from a model folder (``spec.model_dir``); raw features only otherwise."""
    if spec.model_dir is None:
        return FeatureSet(spec)
    return load_feature_code(spec.model_dir, spec)


def feature_columns(spec: ModelSpec) -> list[str]:
    """Model input columns, in the order the booster sees them."""
    return feature_set(spec).columns


def categorical_columns(spec: ModelSpec) -> list[str]:
    return list(spec.features.categorical)


def derived_sources(spec: ModelSpec) -> dict[str, tuple[str, ...]]:
    """Derived input -> raw features it is built from, as the model's features.py declares them."""
    return feature_set(spec).sources


def build_features(raw: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Turn raw rows into the float matrix the model takes, with the model's own feature code.

    Raises KeyError naming the missing columns rather than producing a silently
    wrong matrix; FeatureCodeError when the model's features.py breaks the contract.
    """
    return feature_set(spec).build(raw)
