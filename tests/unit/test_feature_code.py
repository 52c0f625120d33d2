"""The feature contract: a model folder's features.py, loaded by path; clear errors naming the file and function."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.core.features import FeatureCodeError, build_features, feature_set, load_feature_code
from loopline.core.spec import load_spec, load_spec_file
from tests.generators import credit_risk as datagen

MODELS = Path(__file__).resolve().parents[2] / "models"
SPEC = load_spec("credit_risk", MODELS)


def model_folder(tmp_path: Path, features: str | None, name: str = "credit_risk") -> Path:
    """A copy of the credit_risk spec in its own folder, with the given features.py (or none)."""
    folder = tmp_path / name
    folder.mkdir(parents=True)
    shutil.copy2(MODELS / "credit_risk" / "spec.yaml", folder / "spec.yaml")
    if features is not None:
        (folder / "features.py").write_text(textwrap.dedent(features))
    return folder


def spec_in(folder: Path):
    return load_spec_file(folder / "spec.yaml")


def test_a_model_without_features_py_takes_its_raw_features_only(tmp_path):
    spec = spec_in(model_folder(tmp_path, None))
    fs = feature_set(spec)
    assert fs.derived == () and fs.sources == {}
    assert fs.columns == [*spec.features.numeric, *spec.features.categorical]
    out = build_features(datagen.make_batch(0, n_rows=20, seed=1), spec)
    assert list(out.columns) == fs.columns and len(out) == 20


def test_a_spec_built_in_memory_has_raw_features_only():
    spec = type(SPEC).model_validate(SPEC.model_dump())
    assert spec.model_dir is None and feature_set(spec).derived == ()
    assert feature_set(spec.in_folder(MODELS / "credit_risk")).sources == feature_set(SPEC).sources


def test_the_shipped_model_declares_its_derived_inputs():
    fs = feature_set(SPEC)
    assert fs.path == (MODELS / "credit_risk" / "features.py").resolve()
    assert fs.sources["loan_to_income"] == ("loan_amount", "annual_income")


def test_one_row_gives_the_same_features_as_many_rows():
    raw = datagen.make_batch(3, n_rows=300, seed=5)
    many = build_features(raw, SPEC)
    for i in (0, 17, 299):
        one = build_features(raw.iloc[[i]], SPEC)
        pd.testing.assert_frame_equal(one, many.iloc[[i]], check_exact=True)


def test_array_path_needs_no_dataframe_and_agrees_with_the_frame_path():
    raw = datagen.make_batch(3, n_rows=50, seed=5)
    fs = feature_set(SPEC)
    cols = fs.raw_arrays(raw)
    frame = build_features(raw, SPEC)
    arrays = fs.build_arrays(cols)
    assert list(arrays) == fs.columns
    for name in fs.columns:
        np.testing.assert_array_equal(arrays[name], frame[name].to_numpy())
    one = fs.build_arrays({k: v[4:5] for k, v in cols.items()})  # one row, plain arrays
    assert all(one[n].shape == (1,) for n in fs.columns)
    np.testing.assert_array_equal(np.array([one[n][0] for n in fs.columns]), frame.iloc[4].to_numpy())


def test_two_models_feature_code_does_not_clash(tmp_path):
    a = spec_in(
        model_folder(
            tmp_path / "a",
            "from loopline.core.features import derived\n"
            "@derived(sources=('age',))\ndef twice(c): return c['age'] * 2\n",
        )
    )
    b = spec_in(
        model_folder(
            tmp_path / "b",
            "from loopline.core.features import derived\n"
            "@derived(sources=('age',))\ndef twice(c): return c['age'] * 3\n",
        )
    )
    raw = datagen.make_batch(0, n_rows=5, seed=1)
    np.testing.assert_array_equal(build_features(raw, a)["twice"], raw["age"] * 2)
    np.testing.assert_array_equal(build_features(raw, b)["twice"], raw["age"] * 3)


BAD = {
    "unknown source": (
        """
        from loopline.core.features import derived
        @derived(sources=("age", "shoe_size"))
        def age_per_shoe(c):
            return c["age"] / c["shoe_size"]
        """,
        r"features\.py, function age_per_shoe\(\): sources \['shoe_size'\] are not raw or stored features",
    ),
    "raises": (
        """
        from loopline.core.features import derived
        @derived(sources=("age",))
        def broken(c):
            raise RuntimeError("boom")
        """,
        r"features\.py, function broken\(\) raised RuntimeError: boom",
    ),
    "not an array": (
        """
        from loopline.core.features import derived
        @derived(sources=("age",))
        def scalar(c):
            return float(c["age"].mean())
        """,
        r"features\.py, function scalar\(\) returned float, expected a numeric numpy array",
    ),
    "wrong length": (
        """
        from loopline.core.features import derived
        @derived(sources=("age",))
        def short(c):
            return c["age"][:1]
        """,
        r"features\.py, function short\(\) returned shape \(1,\), expected \(5,\)",
    ),
    "undeclared column": (
        """
        from loopline.core.features import derived
        @derived(sources=("age",))
        def sneaky(c):
            return c["age"] / c["annual_income"]
        """,
        r"features\.py, function sneaky\(\) reads column 'annual_income' it does not declare",
    ),
    "import error": ("import not_a_module_anywhere\n", r"features\.py failed to import: ModuleNotFoundError"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_mistake_in_features_py_names_the_file_and_the_function(tmp_path, case):
    code, message = BAD[case]
    folder = model_folder(tmp_path, code)
    with pytest.raises(FeatureCodeError, match=message) as err:
        build_features(datagen.make_batch(0, n_rows=5, seed=1), spec_in(folder))
    assert str(folder / "features.py") in str(err.value) or str((folder / "features.py").resolve()) in str(err.value)


def test_load_feature_code_takes_any_folder(tmp_path):
    folder = model_folder(
        tmp_path,
        "from loopline.core.features import derived\n"
        "@derived(sources=('age', 'annual_income'))\ndef x(c): return c['age'] + c['annual_income']\n",
    )
    fs = load_feature_code(folder, SPEC)
    assert fs.sources == {"x": ("age", "annual_income")}
    assert fs.columns.index("x") == len(SPEC.features.numeric)  # after the numeric, before the categorical


def test_the_bento_build_context_carries_features_py_and_the_service_loads_it_from_beside_itself(tmp_path):
    from loopline.core.settings import get_settings
    from loopline.serving.packaging import build_context

    ctx = build_context("credit_risk", get_settings(), tmp_path / "ctx")
    assert (ctx / "features.py").read_text() == (MODELS / "credit_risk" / "features.py").read_text()
    spec = load_spec_file(ctx / "spec.yaml")  # what service.py does inside the Bento
    fs = feature_set(spec)
    assert fs.path == (ctx / "features.py").resolve()
    raw = datagen.make_batch(0, n_rows=30, seed=4)
    pd.testing.assert_frame_equal(fs.build(raw), build_features(raw, SPEC), check_exact=True)
