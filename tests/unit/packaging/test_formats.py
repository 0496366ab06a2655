"""The models users bring, packaged and served: each package answers as its source model does, with
the source's own labels; what cannot be packaged is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sagegate.features import FeaturePipeline
from sagegate.manifest import Feature
from sagegate.packaging import PackageError, ParityError, build_package
from sagegate.packaging import builder as builder_module
from sagegate.server.model import LoadedModel

RNG = np.random.default_rng(7)


def _served(path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    model = LoadedModel.load("m", path, ["CPUExecutionProvider"])
    return model.predict_rows(model.pipeline.rows_from_records(records))


def _numeric(width: int = 4) -> list[Feature]:
    return [Feature(name=f"f{i}", type="float") for i in range(width)]


def _matrix(n: int = 300, width: int = 4) -> tuple[np.ndarray, np.ndarray]:
    x = RNG.normal(size=(n, width))
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)


def _records(x: np.ndarray) -> list[dict[str, float]]:
    return [{f"f{i}": float(v) for i, v in enumerate(row)} for row in x]


# -- labels are the model's own ------------------------------------------------------------------------------


def _approve_decline() -> tuple[Any, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    x, y = _matrix()
    return LogisticRegression().fit(x, np.where(y == 1, "decline", "approve")), x


def test_labels_in_another_order_than_the_models_classes_are_refused(tmp_path: Path) -> None:
    model, x = _approve_decline()
    with pytest.raises(PackageError, match=r"not the model's classes in its order \['approve', 'decline'\]"):
        build_package(
            model,
            framework="sklearn",
            name="m",
            version="1",
            features=_numeric(),
            task="binary",
            labels=["decline", "approve"],
            sample=_records(x[:3]),
            output_dir=tmp_path / "p",
        )
    assert not (tmp_path / "p").exists()


def test_labels_left_out_are_taken_from_the_model_and_served_right(tmp_path: Path) -> None:
    model, x = _approve_decline()
    built = build_package(
        model,
        framework="sklearn",
        name="m",
        version="1",
        features=_numeric(),
        task="binary",
        sample=_records(x[:3]),
        output_dir=tmp_path / "p",
    )
    assert built.manifest.outputs.labels == ["approve", "decline"]
    served = [p["label"] for p in _served(built.path, _records(x[:50]))]
    assert served == list(model.predict(x[:50]))


# -- parity beyond the sample ------------------------------------------------------------------------------------


def test_a_package_that_differs_from_its_source_off_the_sample_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ONNX model agrees with the source on the sample only: the generated records catch it."""
    from sklearn.linear_model import LogisticRegression

    x, y = _matrix()
    model = LogisticRegression().fit(x, y)
    sample = _records(x[:3])
    real = builder_module.convert

    def convert(*args: Any, **kwargs: Any) -> Any:
        converted = real(*args, **kwargs)
        honest = converted.source_predict

        def source(inputs: dict[str, np.ndarray]) -> np.ndarray:  # another model off the sample
            out = honest(inputs)
            out[3:] = out[3:, ::-1]
            return out

        return type(converted)(converted.onnx, converted.output, source, converted.classes, converted.class_count)

    monkeypatch.setattr(builder_module, "convert", convert)
    with pytest.raises(ParityError, match=r"of 259 checked"):
        build_package(
            model,
            framework="sklearn",
            name="m",
            version="1",
            features=_numeric(),
            task="binary",
            labels=["0", "1"],
            sample=sample,
            output_dir=tmp_path / "p",
        )


def test_generated_records_cover_ranges_categories_and_missing_values() -> None:
    features = [
        Feature(name="a", type="int", minimum=0, maximum=9),
        Feature(name="c", type="categorical", categories=["x", "y", "z"], transforms=[{"kind": "one_hot"}]),
        Feature(name="o", type="float", required=False, default=1.0),
    ]
    records = builder_module.generated_records(features, [{"a": 1, "c": "x"}], n=200)
    assert {r["a"] for r in records} == set(range(10))
    assert {r["c"] for r in records} == {"x", "y", "z"}
    assert 0 < sum("o" not in r for r in records) < 200
    FeaturePipeline(features).rows_from_records(records)  # every one valid


# -- determinism ---------------------------------------------------------------------------------------------------


def test_the_same_model_and_spec_give_the_same_bytes(tmp_path: Path) -> None:
    import xgboost

    x, y = _matrix()
    model = xgboost.XGBClassifier(n_estimators=5, max_depth=3).fit(x, y)
    args: dict[str, Any] = {
        "framework": "xgboost",
        "name": "m",
        "version": "1",
        "features": _numeric(),
        "task": "binary",
        "labels": ["0", "1"],
        "sample": _records(x[:3]),
    }
    first = build_package(model, output_dir=tmp_path / "a", **args)
    second = build_package(model, output_dir=tmp_path / "b", **args)
    assert first.manifest.sha256 == second.manifest.sha256
    assert (first.path / "model.onnx").read_bytes() == (second.path / "model.onnx").read_bytes()
    # the whole artifact too: model.tar.gz holds the manifest, so nothing in it may depend on the time
    assert (first.path / "manifest.json").read_bytes() == (second.path / "manifest.json").read_bytes()
    assert first.archive_sha256 == second.archive_sha256


# -- scikit-learn pipelines over raw columns ------------------------------------------------------------------------


def _regions_pipeline() -> tuple[Any, Any]:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    n = 400
    frame = pd.DataFrame(
        {
            "region": RNG.choice(["north", "south", "east"], n),
            "amount": RNG.gamma(2.0, 50.0, n),
            "mean radius": RNG.normal(10, 2, n),
        }
    )
    y = ((frame["region"] == "north") ^ (frame["amount"] > 100)).astype(int)
    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("codes", OneHotEncoder(handle_unknown="ignore"), ["region"]),
                        ("scale", StandardScaler(), ["amount", "mean radius"]),
                    ]
                ),
            ),
            ("model", LogisticRegression()),
        ]
    )
    return pipeline.fit(frame, y), frame


def test_a_pipeline_with_a_column_transformer_over_strings_is_packaged_and_served(tmp_path: Path) -> None:
    pipeline, frame = _regions_pipeline()
    features = [
        {"name": "region", "type": "categorical", "categories": ["north", "south", "east"]},
        {"name": "amount", "type": "float", "minimum": 0},
        {"name": "mean radius", "type": "float"},
    ]
    records = frame.head(60).to_dict(orient="records")
    built = build_package(
        pipeline,
        framework="sklearn",
        name="regions",
        version="1",
        features=features,
        task="binary",
        sample=records[:3],
        output_dir=tmp_path / "p",
    )
    assert (built.manifest.inputs, built.manifest.input_types) == (
        "columns",
        {"region": "string", "amount": "float32", "mean radius": "float32"},
    )
    served = _served(built.path, records)
    expected = pipeline.predict_proba(frame.head(60))[:, 1]
    np.testing.assert_allclose([p["prediction"] for p in served], expected, atol=1e-5)


def test_a_pipeline_over_columns_the_spec_does_not_declare_is_refused(tmp_path: Path) -> None:
    pipeline, _ = _regions_pipeline()
    with pytest.raises(PackageError, match="was fit on the columns"):
        build_package(
            pipeline,
            framework="sklearn",
            name="regions",
            version="1",
            features=[{"name": "region", "type": "categorical", "categories": ["north"]}],
            task="binary",
            sample=[{"region": "north"}],
            output_dir=tmp_path / "p",
        )


def test_names_as_scikit_learn_writes_them_are_accepted(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    data = load_breast_cancer()
    names = list(data.feature_names[:4])  # "mean radius", "mean texture", ...
    x = data.data[:, :4]
    model = LogisticRegression(max_iter=500).fit(x, data.target)
    built = build_package(
        model,
        framework="sklearn",
        name="cancer",
        version="1",
        features=[{"name": n, "type": "float", "minimum": 0} for n in names],
        task="binary",
        sample=[dict(zip(names, map(float, row), strict=True)) for row in x[:3]],
        output_dir=tmp_path / "p",
    )
    assert built.manifest.features[0].name == "mean radius"


# -- boosters -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lightgbm", "catboost"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_boosters_are_packaged_and_answer_as_their_source(tmp_path: Path, kind: str, task: str) -> None:
    x = RNG.normal(size=(300, 4))
    y = {
        "binary": (x[:, 0] > 0).astype(int),
        "multiclass": np.digitize(x[:, 0], [-0.5, 0.5]),
        "regression": x[:, 0] * 2,
    }[task]
    if kind == "lightgbm":
        import lightgbm

        model: Any = (lightgbm.LGBMRegressor if task == "regression" else lightgbm.LGBMClassifier)(
            n_estimators=20, verbose=-1
        ).fit(x, y)
    else:
        import catboost

        model = (catboost.CatBoostRegressor if task == "regression" else catboost.CatBoostClassifier)(
            iterations=20, verbose=False, allow_writing_files=False
        ).fit(x, y)
    built = build_package(
        model,
        framework=kind,
        name="m",
        version="1",
        features=_numeric(),
        task=task,
        sample=_records(x[:3]),
        output_dir=tmp_path / "p",
    )
    served = _served(built.path, _records(x[:40]))
    if task == "regression":
        np.testing.assert_allclose([p["prediction"] for p in served], model.predict(x[:40]), rtol=1e-4, atol=1e-4)
    else:
        assert [p["label"] for p in served] == [str(c) for c in model.predict(x[:40]).reshape(-1)]


def test_a_lightgbm_model_file_is_packaged_from_the_command_line(tmp_path: Path) -> None:
    import lightgbm

    from sagegate.packaging.converters import load_model_file

    x, y = _matrix()
    lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(x, y).booster_.save_model(tmp_path / "model.txt")
    from sagegate.manifest import Framework, Task

    booster = load_model_file(tmp_path / "model.txt", Framework.LIGHTGBM, Task.BINARY)
    built = build_package(
        booster,
        framework="lightgbm",
        name="m",
        version="1",
        features=_numeric(),
        task="binary",
        labels=["no", "yes"],
        sample=_records(x[:3]),
        output_dir=tmp_path / "p",
    )
    served = _served(built.path, _records(x[:20]))
    np.testing.assert_allclose([p["prediction"] for p in served], booster.predict(x[:20]), atol=1e-5)


# -- neural networks --------------------------------------------------------------------------------------------------


def test_a_pt2_program_with_a_static_batch_is_refused_in_one_line(tmp_path: Path) -> None:
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(4, 1))
    program = torch.export.export(net, (torch.zeros(8, 4),))  # batch fixed at 8
    with pytest.raises(PackageError) as caught:
        build_package(
            program,
            framework="pytorch",
            name="m",
            version="1",
            features=_numeric(),
            task="binary",
            labels=["n", "y"],
            sample=[{"f0": 0.0, "f1": 0.0, "f2": 0.0, "f3": 0.0}],
            output_dir=tmp_path / "p",
        )
    message = str(caught.value)
    assert "\n" not in message and "fixed batch of 8" in message and "dynamic batch" in message


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_a_keras_model_is_packaged_through_tf2onnx(tmp_path: Path, task: str) -> None:
    keras = pytest.importorskip("keras")
    x, y = _matrix(200)
    classes = 2 if task == "binary" else 3
    last = (
        keras.layers.Dense(1, activation="sigmoid") if task == "binary" else keras.layers.Dense(3, activation="softmax")
    )
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"), last])
    model.compile(loss="binary_crossentropy" if task == "binary" else "sparse_categorical_crossentropy")
    model.fit(x, y if task == "binary" else np.digitize(x[:, 0], [-0.5, 0.5]), epochs=1, verbose=0)
    labels = [f"c{i}" for i in range(classes)]
    built = build_package(
        model,
        framework="tensorflow",
        name="m",
        version="1",
        features=_numeric(),
        task=task,
        labels=labels,
        sample=_records(x[:3]),
        output_dir=tmp_path / "p",
        tolerance=1e-4,
    )
    served = _served(built.path, _records(x[:20]))
    probabilities = model.predict(x[:20].astype(np.float32), verbose=0)
    if task == "binary":
        np.testing.assert_allclose([p["prediction"] for p in served], probabilities[:, 0], atol=1e-4)
    else:
        assert [p["label"] for p in served] == [labels[i] for i in probabilities.argmax(axis=1)]


def test_a_keras_model_with_a_normalization_layer_is_packaged_with_its_statistics(tmp_path: Path) -> None:
    """Keras 3 keeps an adapted Normalization's mean and variance as captured tensors, which a plain
    tf2onnx conversion leaves as graph inputs that no request feeds."""
    keras = pytest.importorskip("keras")
    x = RNG.normal(size=(200, 4)) * 10 + 5
    norm = keras.layers.Normalization()
    norm.adapt(x.astype(np.float32))
    model = keras.Sequential(
        [keras.Input(shape=(4,)), norm, keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(loss="mse")
    model.fit(x, x[:, 0] * 2, epochs=1, verbose=0)
    built = build_package(
        model,
        framework="tensorflow",
        name="m",
        version="1",
        features=_numeric(),
        task="regression",
        sample=_records(x[:3]),
        output_dir=tmp_path / "p",
        tolerance=1e-4,
    )
    served = _served(built.path, _records(x[:20]))
    expected = model.predict(x[:20].astype(np.float32), verbose=0).reshape(-1)
    np.testing.assert_allclose([p["prediction"] for p in served], expected, rtol=1e-4, atol=1e-4)


# -- big models: external data --------------------------------------------------------------------------------------


def _external_model(folder: Path, width: int = 4, size: int = 1 << 20) -> Path:
    """A regression model whose weights (and a large padding tensor) live in a file beside it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(RNG.normal(size=(width, 1)).astype(np.float32), "w")
    padding = numpy_helper.from_array(np.zeros(size // 4, dtype=np.float32), "padding")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["variable"])],
        "big",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])],
        initializer=[weights, padding],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "big.onnx", save_as_external_data=True, location="big.weights", size_threshold=0)
    return folder / "big.onnx"


def test_a_model_with_external_data_is_packaged_and_served_from_its_files(tmp_path: Path) -> None:
    import tracemalloc

    source = _external_model(tmp_path / "src", size=64 << 20)
    x = RNG.normal(size=(10, 4))
    tracemalloc.start()
    built = build_package(
        source,
        framework="onnx",
        name="big",
        version="1",
        features=_numeric(),
        task="regression",
        sample=_records(x[:2]),
        output_dir=tmp_path / "p",
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 << 20, f"packaging held {peak >> 20} MB in Python: the files must be streamed"
    assert set(built.manifest.data_files) == {"big.weights"}
    assert (built.path / "big.weights").stat().st_size > 64 << 20
    import tarfile

    with tarfile.open(built.archive) as archive:
        assert sorted(archive.getnames()) == ["big.weights", "explainer.npz", "manifest.json", "model.onnx"]
    assert len(_served(built.path, _records(x))) == 10


def test_a_modified_data_file_is_refused(tmp_path: Path) -> None:
    from sagegate.server.exceptions import ModelLoadError

    source = _external_model(tmp_path / "src")
    built = build_package(
        source,
        framework="onnx",
        name="big",
        version="1",
        features=_numeric(),
        task="regression",
        sample=[{"f0": 1.0, "f1": 0.0, "f2": 0.0, "f3": 0.0}],
        output_dir=tmp_path / "p",
    )
    with (built.path / "big.weights").open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\x01")
    with pytest.raises(ModelLoadError, match=r"big\.weights has sha256"):
        LoadedModel.load("big", built.path, ["CPUExecutionProvider"])


def test_the_cli_lists_the_frameworks_it_knows(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sagegate.cli import app

    (tmp_path / "spec.json").write_text(
        json.dumps({"name": "m", "version": "1", "task": "binary", "features": [{"name": "a", "type": "float"}]})
    )
    (tmp_path / "model.bin").write_bytes(b"x")
    result = CliRunner().invoke(
        app,
        [
            "package",
            str(tmp_path / "model.bin"),
            "--framework",
            "caffe",
            "--spec",
            str(tmp_path / "spec.json"),
            "-o",
            str(tmp_path / "p"),
            "--sample",
            str(tmp_path / "spec.json"),
        ],
    )
    assert result.exit_code != 0
    assert "--framework must be one of sklearn, xgboost, lightgbm, catboost, pytorch, tensorflow, onnx" in result.output


# -- features in the model's own column order ---------------------------------------------------------------


def _frame_fit(kind: str) -> tuple[Any, Any]:
    """A model fit on a data frame of columns amount, hour, age (y depends on amount and hour only)."""
    import pandas as pd

    x = pd.DataFrame(RNG.normal(size=(300, 3)), columns=["amount", "hour", "age"])
    y = (x["amount"] + 0.5 * x["hour"] > 0).astype(int)
    if kind == "sklearn":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression().fit(x, y), x
    if kind == "xgboost":
        import xgboost

        return xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(x, y), x
    if kind == "lightgbm":
        import lightgbm

        return lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(x, y), x
    import catboost

    return catboost.CatBoostClassifier(iterations=10, verbose=False, allow_writing_files=False).fit(x, y), x


def _package(model: Any, kind: str, names: list[str], frame: Any, out: Path) -> Any:
    return build_package(
        model,
        framework=kind,
        name="m",
        version="1",
        features=[Feature(name=n, type="float") for n in names],
        task="binary",
        sample=frame[names].head(3).to_dict("records"),
        output_dir=out,
    )


@pytest.mark.parametrize("kind", ["sklearn", "xgboost", "lightgbm", "catboost"])
def test_features_listed_in_another_order_than_the_model_was_fit_on_are_refused(tmp_path: Path, kind: str) -> None:
    model, frame = _frame_fit(kind)
    with pytest.raises(
        PackageError, match=r"column 0 of the model's input is 'amount' where the spec's features put 'age'"
    ):
        _package(model, kind, ["age", "hour", "amount"], frame, tmp_path / "p")
    assert not (tmp_path / "p").exists()
    # in the model's order it packages, and serves what the model answers
    built = _package(model, kind, ["amount", "hour", "age"], frame, tmp_path / "ok")
    served = _served(built.path, frame.head(40).to_dict("records"))
    assert [int(p["label"]) for p in served] == [int(v) for v in model.predict(frame.head(40)).reshape(-1)]


def test_one_hot_columns_in_another_order_than_the_frame_the_model_was_fit_on_are_refused(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    raw = pd.DataFrame({"amount": RNG.normal(size=300), "channel": RNG.choice(["app", "web"], size=300)})
    x = pd.get_dummies(raw, columns=["channel"], dtype=float)  # amount, channel_app, channel_web
    model = LogisticRegression().fit(x, (raw["channel"] == "web").astype(int))
    features = [
        Feature(name="amount", type="float"),
        Feature.model_validate(
            {
                "name": "channel",
                "type": "categorical",
                "categories": ["web", "app"],  # one-hot columns channel_web, channel_app: swapped
                "transforms": [{"kind": "one_hot"}],
            }
        ),
    ]
    with pytest.raises(PackageError, match=r"column 1 of the model's input is 'channel_app' where the spec"):
        build_package(
            model,
            framework="sklearn",
            name="m",
            version="1",
            features=features,
            task="binary",
            sample=raw.head(3).to_dict("records"),
            output_dir=tmp_path / "p",
        )


def test_a_model_fit_on_a_bare_matrix_has_no_names_to_check(tmp_path: Path) -> None:
    import xgboost

    x, y = _matrix()
    model = xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(x, y)
    names = ["f3", "f2", "f1", "f0"]  # the booster's default names are f0..f3, but it kept none
    built = build_package(
        model,
        framework="xgboost",
        name="m",
        version="1",
        features=[Feature(name=n, type="float") for n in names],
        task="binary",
        sample=[dict(zip(names, map(float, row), strict=True)) for row in x[:3]],
        output_dir=tmp_path / "p",
    )
    assert built.manifest.features[0].name == "f3"


def test_lightgbm_pandas_categories_in_another_order_than_the_ordinal_step_are_refused(tmp_path: Path) -> None:
    import lightgbm
    import pandas as pd

    channel = pd.Categorical(RNG.choice(["app", "pos", "web"], size=400), categories=["app", "pos", "web"])
    frame = pd.DataFrame({"amount": RNG.normal(size=400), "channel": channel})
    y = (frame["channel"] == "web").astype(int)
    model = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1, min_child_samples=5).fit(frame, y)

    def package(order: list[str], out: Path) -> Any:
        return build_package(
            model,
            framework="lightgbm",
            name="m",
            version="1",
            features=[
                Feature(name="amount", type="float"),
                Feature.model_validate(
                    {"name": "channel", "type": "categorical", "categories": order, "transforms": [{"kind": "ordinal"}]}
                ),
            ],
            task="binary",
            sample=[{"amount": 0.1, "channel": "web"}],
            output_dir=out,
        )

    with pytest.raises(
        PackageError, match=r"feature 'channel': the model was fit on the categories \['app', 'pos', 'web'\]"
    ):
        package(["web", "pos", "app"], tmp_path / "p")
    built = package(["app", "pos", "web"], tmp_path / "ok")
    assert _served(built.path, [{"amount": 0.0, "channel": "web"}])[0]["label"] == "1"


def test_a_pipeline_whose_encoder_refuses_unseen_categories_needs_them_declared(tmp_path: Path) -> None:
    """With handle_unknown='error' an unseen category fails inside ONNX Runtime: a 500 per request.
    Declared as categorical within the encoder's categories, validation refuses the rest (422)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame({"region": RNG.choice(["north", "south"], 200), "amount": RNG.normal(size=200)})
    y = (frame["region"] == "north").astype(int)
    pipeline = Pipeline(
        [
            ("prepare", ColumnTransformer([("codes", OneHotEncoder(), ["region"])], remainder="passthrough")),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, y)

    def package(region: dict[str, Any], out: str) -> Any:
        return build_package(
            pipeline,
            framework="sklearn",
            name="m",
            version="1",
            features=[{"name": "region", **region}, {"name": "amount", "type": "float"}],
            task="binary",
            sample=frame.head(2).to_dict("records"),
            output_dir=tmp_path / out,
        )

    with pytest.raises(PackageError, match=r"feature 'region': the pipeline's encoder refuses categories"):
        package({"type": "string"}, "a")
    with pytest.raises(PackageError, match=r"categories \['west'\] were not seen"):
        package({"type": "categorical", "categories": ["north", "south", "west"]}, "b")
    built = package({"type": "categorical", "categories": ["north", "south"]}, "c")
    assert _served(built.path, [{"region": "south", "amount": 0.0}])[0]["label"] in ("0", "1")
