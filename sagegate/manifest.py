"""ModelManifest: what a model package declares about its model.

The manifest is the contract between the people who train a model and every part of sagegate
that serves it: the inference server compiles its input features into preprocessing
(`sagegate.features`), the gateway validates requests against it, and the registry stores it.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "ExplainerSpec",
    "Feature",
    "FeatureType",
    "Framework",
    "Impute",
    "InputType",
    "Lineage",
    "Log1p",
    "MinMax",
    "ModelManifest",
    "Monitoring",
    "MonitoringThresholds",
    "OneHot",
    "Ordinal",
    "Outputs",
    "Standardize",
    "Task",
    "Transform",
    "one_of",
]

StrEnumT = TypeVar("StrEnumT", bound=StrEnum)
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"

NAME_PATTERN = r"^[a-z0-9](-*[a-z0-9]){0,62}$"  # a valid SageMaker resource name, lower case


class FeatureType(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    CATEGORICAL = "categorical"
    STRING = "string"

    @property
    def is_numeric(self) -> bool:
        return self in (FeatureType.FLOAT, FeatureType.INT, FeatureType.BOOL)


class Framework(StrEnum):
    SKLEARN = "sklearn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    CATBOOST = "catboost"
    PYTORCH = "pytorch"
    TENSORFLOW = "tensorflow"
    ONNX = "onnx"


InputType = Literal["float32", "float64", "int64", "string"]
# A feature's name: a letter or _, then letters, digits, spaces and _ . - ( ) / [ ] %, not ending in a
# space (so "mean radius" and "petal length (cm)", as scikit-learn's data sets name them).
FEATURE_NAME = r"^[A-Za-z_](?:[A-Za-z0-9_.\-()/\[\]% ]{0,126}[A-Za-z0-9_.\-()/\[\]%])?$"


class Task(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


def one_of(enum: type[StrEnumT], value: Any, what: str) -> StrEnumT:
    """`value` as a member of `enum`; else a ValueError that lists them."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise ValueError(f"{what} must be one of {choices}, not {value!r}") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Standardize(_Strict):
    kind: Literal["standardize"] = "standardize"
    mean: float
    std: float = Field(gt=0)


class MinMax(_Strict):
    kind: Literal["min_max"] = "min_max"
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> MinMax:
        if not self.max > self.min:
            raise ValueError("min_max needs max > min")
        return self


class Log1p(_Strict):
    kind: Literal["log1p"] = "log1p"


class Impute(_Strict):
    """Fills a missing value (absent, null, or an empty CSV cell) before the other steps."""

    kind: Literal["impute"] = "impute"
    value: float | str


class OneHot(_Strict):
    """One column per category; a value outside the categories encodes as all zeros."""

    kind: Literal["one_hot"] = "one_hot"
    categories: list[str] | None = None  # defaults to the feature's categories


class Ordinal(_Strict):
    """The category's index; a value outside the categories encodes as `unknown_value`."""

    kind: Literal["ordinal"] = "ordinal"
    categories: list[str] | None = None
    unknown_value: float = -1.0


Transform = Annotated[Standardize | MinMax | Log1p | Impute | OneHot | Ordinal, Field(discriminator="kind")]
_ENCODINGS = (OneHot, Ordinal)


class Feature(_Strict):
    name: str = Field(pattern=FEATURE_NAME)
    type: FeatureType
    required: bool = True
    default: float | int | bool | str | None = None
    minimum: float | None = None
    maximum: float | None = None
    categories: list[str] | None = None
    transforms: list[Transform] = Field(default_factory=list)
    description: str | None = None
    sensitive: Literal["drop", "hash"] | None = Field(
        default=None, description="in the prediction log: left out (drop) or as a keyed hash (hash)"
    )
    protected: bool | None = Field(default=None, description="a protected attribute: bias is checked across its groups")

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.protected and self.sensitive == "drop":
            raise ValueError(f"feature {self.name!r}: a protected attribute dropped from the log cannot be checked")
        encodings = [t for t in self.transforms if isinstance(t, _ENCODINGS)]
        imputes = [i for i, t in enumerate(self.transforms) if isinstance(t, Impute)]
        if imputes and imputes != [0]:
            raise ValueError(f"feature {self.name!r}: impute must be the first and only impute step")
        if self.type.is_numeric:
            if encodings:
                raise ValueError(f"feature {self.name!r}: {self.type} cannot be one_hot/ordinal encoded")
            if self.categories is not None:
                raise ValueError(f"feature {self.name!r}: categories are for categorical features")
        else:
            if self.type is FeatureType.CATEGORICAL and not self.categories:
                raise ValueError(f"feature {self.name!r}: categorical features need categories")
            if self.transforms and (len(encodings) != 1 or not isinstance(self.transforms[-1], _ENCODINGS)):
                raise ValueError(
                    f"feature {self.name!r}: {self.type} features need exactly one one_hot or "
                    "ordinal step, as the last transform"
                )
            if self.minimum is not None or self.maximum is not None:
                raise ValueError(f"feature {self.name!r}: minimum/maximum are for numeric features")
            if encodings and encodings[0].categories is None and not self.categories:
                raise ValueError(f"feature {self.name!r}: {encodings[0].kind} needs categories")
            if any(not isinstance(t, (Impute, *_ENCODINGS)) for t in self.transforms):
                raise ValueError(f"feature {self.name!r}: only impute and an encoding apply to {self.type}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name!r}: minimum > maximum")
        if any(isinstance(t, Log1p) for t in self.transforms) and (self.minimum is None or self.minimum <= -1):
            raise ValueError(f"feature {self.name!r}: log1p needs a declared minimum > -1")
        if not self.required and self.default is None and not imputes:
            raise ValueError(f"feature {self.name!r}: an optional feature needs a default or an impute step")
        for value, what in (
            (self.default, "default"),
            *((t.value, "impute") for t in self.transforms if isinstance(t, Impute)),
        ):
            if value is not None:
                self._check_fill(value, what)
        return self

    def _check_fill(self, value: float | int | bool | str, what: str) -> None:
        if self.type.is_numeric:
            if isinstance(value, str) or (isinstance(value, float) and math.isnan(value)):
                raise ValueError(f"feature {self.name!r}: {what} must be a number")
        elif not isinstance(value, str):
            raise ValueError(f"feature {self.name!r}: {what} must be a string")

    @property
    def encoding(self) -> OneHot | Ordinal | None:
        last = self.transforms[-1] if self.transforms else None
        return last if isinstance(last, _ENCODINGS) else None

    @property
    def encoded_categories(self) -> list[str]:
        enc = self.encoding
        cats = enc.categories if enc is not None and enc.categories is not None else self.categories
        return list(cats or [])

    @property
    def width(self) -> int:
        """How many columns of the model's input matrix this feature fills."""
        enc = self.encoding
        return len(self.encoded_categories) if isinstance(enc, OneHot) else 1


class Outputs(_Strict):
    task: Task
    labels: list[str] | None = None
    threshold: float = Field(default=0.5, gt=0, lt=1)
    onnx_output: str = Field(description="name of the ONNX output holding probabilities or values")

    @model_validator(mode="after")
    def _labels(self) -> Outputs:
        if self.task is Task.BINARY and (self.labels is None or len(self.labels) != 2):
            raise ValueError("a binary model needs exactly two labels: [negative, positive]")
        if self.task is Task.MULTICLASS and (self.labels is None or len(self.labels) < 2):
            raise ValueError("a multiclass model needs at least two labels")
        if self.task is Task.REGRESSION and self.labels:
            raise ValueError("a regression model has no labels")
        return self


class ExplainerSpec(_Strict):
    """How the package explains its predictions (sagegate.explain), chosen at packaging."""

    method: Literal["tree", "linear", "permutation"] = Field(
        description="tree: exact TreeSHAP of the ensemble; linear: exact for a linear model; permutation:"
        " Shapley values over a background sample (exact with up to 10 features)"
    )
    output_space: Literal["margin", "probability", "value"] = Field(
        description="what base value + contributions add up to: the raw margin (log-odds for a binary"
        " model), the probability, or the regression value"
    )
    file: str = "explainer.npz"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    background_rows: int = Field(ge=0, description="rows the base value and the importance are over")
    importance: dict[str, float] = Field(description="mean |contribution| per feature over the background")


class MonitoringThresholds(_Strict):
    """When a check fails (sagegate.monitoring.checks says how each statistic is computed)."""

    psi: float = Field(default=0.2, gt=0, description="population stability index of a feature's histogram")
    mean_shift_sigma: float = Field(default=3.0, gt=0, description="|mean - baseline mean| in baseline std")
    missing_rate_increase: float = Field(default=0.05, gt=0, description="missing rate above the baseline's")
    out_of_range_rate: float = Field(default=0.01, gt=0, description="values outside the baseline's [min, max]")
    unknown_category_rate: float = Field(
        default=0.01, gt=0, description="categories unseen in training, above the baseline's"
    )
    type_failure_rate: float = Field(default=0.01, gt=0, description="requests refused for this feature")
    prediction_shift: float = Field(
        default=0.1, gt=0, description="total variation distance of the score histogram or of the class rates"
    )
    accuracy_drop: float = Field(default=0.05, gt=0, description="relative drop of a holdout metric (MAE: rise)")
    bias_difference: float = Field(default=0.1, gt=0, description="demographic parity / equalized odds difference")
    min_rows: int = Field(default=100, ge=1, description="fewer rows than this in a window: not judged")


class Monitoring(_Strict):
    baseline: str | None = Field(default=None, description="the baseline file beside model.onnx")
    baseline_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    window: str = Field(default="1h", pattern=r"^[1-9][0-9]*[mhd]$", description="the checks' default window")
    accuracy_window: str = Field(default="7d", pattern=r"^[1-9][0-9]*[mhd]$", description="feedback's window")
    thresholds: MonitoringThresholds = Field(default_factory=MonitoringThresholds)

    @model_validator(mode="after")
    def _pointer(self) -> Monitoring:
        if (self.baseline is None) != (self.baseline_sha256 is None):
            raise ValueError("monitoring: a baseline needs its sha256, and a sha256 its baseline")
        if self.baseline is not None and ("/" in self.baseline or self.baseline in (MODEL_FILE, MANIFEST_FILE)):
            raise ValueError(f"monitoring: baseline {self.baseline!r} must be a plain file name beside model.onnx")
        return self


class Lineage(_Strict):
    training_data_uri: str | None = None
    code_version: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class ModelManifest(_Strict):
    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
    framework: Framework
    # When it was registered is the registry's to say; a package holds nothing that depends on the
    # time it was built, so the same model and spec give the same bytes (read from older packages).
    created_at: datetime | None = None
    description: str | None = None
    lineage: Lineage | None = None
    features: list[Feature] = Field(min_length=1)
    outputs: Outputs
    metrics: dict[str, float] = Field(default_factory=dict)
    sample: list[dict[str, Any]] = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    data_files: dict[str, str] = Field(
        default_factory=dict,
        description="files of the model's tensors beside model.onnx (models over 2 GB), with their sha256",
    )
    onnx_input: str = "input"
    inputs: Literal["matrix", "columns"] = Field(
        default="matrix",
        description="matrix: one float32 input [N, width] from the features' transforms; columns: one ONNX"
        " input per feature, named as it, for a model that does its own preprocessing (a scikit-learn"
        " Pipeline with a ColumnTransformer)",
    )
    input_types: dict[str, InputType] | None = Field(
        default=None, description="columns: each feature's ONNX input type"
    )
    input_names: dict[str, str] = Field(
        default_factory=dict, description="columns: ONNX input names that differ from their feature's name"
    )
    entity_key: str | None = Field(default=None, description="feature-store entity key, e.g. user_id")
    default_prediction: float | str | None = Field(
        default=None, description="answer the gateway may give when every model path has failed"
    )
    explainer: ExplainerSpec | None = Field(default=None, description="none: the package explains nothing")
    monitoring: Monitoring | None = Field(default=None, description="the training baseline and the checks' thresholds")

    @property
    def extra_files(self) -> dict[str, str]:
        """The files beside model.onnx that the package holds (the model's data files, the
        explainer's artifact, the monitoring baseline), with their sha256."""
        found = dict(self.data_files)
        if self.explainer is not None:
            found[self.explainer.file] = self.explainer.sha256
        if self.monitoring is not None and self.monitoring.baseline and self.monitoring.baseline_sha256:
            found[self.monitoring.baseline] = self.monitoring.baseline_sha256
        return found

    @field_validator("features")
    @classmethod
    def _unique_names(cls, features: list[Feature]) -> list[Feature]:
        names = [f.name for f in features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {', '.join(duplicates)}")
        return features

    @field_validator("data_files")
    @classmethod
    def _plain_names(cls, files: dict[str, str]) -> dict[str, str]:
        for name, digest in files.items():
            if "/" in name or "\\" in name or name in (".", "..", MODEL_FILE, MANIFEST_FILE) or not name:
                raise ValueError(f"data file {name!r} must be a plain file name beside model.onnx")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"data file {name!r}: not a sha256")
        return files

    @model_validator(mode="after")
    def _inputs(self) -> ModelManifest:
        if self.inputs == "matrix":
            plain = [f.name for f in self.features if not f.type.is_numeric and f.encoding is None]
            if plain:
                raise ValueError(
                    f"feature {plain[0]!r}: text features of a matrix model need one one_hot or ordinal step,"
                    " as the last transform"
                )
        if self.inputs == "columns":
            names = [f.name for f in self.features]
            if self.input_types is None or set(self.input_types) != set(names):
                raise ValueError("a columns model names the ONNX input type of every feature (input_types)")
            shaped = [f.name for f in self.features if f.transforms]
            if shaped:
                raise ValueError(f"a columns model does its own preprocessing: {shaped[0]!r} has transforms")
        return self

    @property
    def thresholds(self) -> MonitoringThresholds:
        return self.monitoring.thresholds if self.monitoring is not None else MonitoringThresholds()

    @property
    def input_width(self) -> int:
        return sum(f.width for f in self.features)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @classmethod
    def read(cls, package_dir: Path) -> ModelManifest:
        return cls.model_validate_json((package_dir / MANIFEST_FILE).read_bytes())

    def dumps(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)
