"""Design choices of the model, decided on the valid split (the test split only reported).

1. The gradient-boosting candidate reads category codes as ordered numbers rather than as
   native categories (the native support re-encodes every input, ~5 ms a call).
2. The served model is the best single family, not the average of the three families'
   probabilities (three times the cost of each prediction).
3. The boosting library: scikit-learn's HistGradientBoosting (served) against LightGBM (codes
   as numbers, or its native categories) and XGBoost, each with a small search scored by
   log-loss on a patient-grouped holdout of train, as `training.tune` does, and early
   stopping on whole patients, as `ReadmissionModel.fit` does.
4. How the trees see the diagnoses: ICD-9 chapters only (served), plus the 3-digit ICD-9
   categories target- and frequency-encoded out of fold (patient-grouped folds of train),
   plus 168 ICD-9-CM sections (finer clinical ranges such as 410-414 ischaemic heart
   disease), or plus the codes themselves as ordered numbers; for HistGradientBoosting and
   LightGBM, each with the configuration choice 3 tuned for it.

Each alternative is measured on valid, where the choice is made, by the primary metric
(macro-F1 after the decision rule is tuned) and ROC-AUC of `<30`; test is printed beside,
for the record only; choices 3 and 4 also print the seconds of the final fit on train and
what `predict_proba` costs for 1 and 1,000 rows (median of repeated calls). Loads and cleans
the real file into a throwaway store and runs the full search of each family, as the
training DAG does (choices 1-2 about 4 minutes on 2 cores, 3-4 about 15 more when another
job shares the cores; fit seconds and prediction times move with that load).

Choice 3's XGBoost row needs `xgboost`, which the project's requirements do not pin
(`pip install xgboost`); without it that row is skipped. LightGBM is a served family now
(`readmission.boosting`); this harness keeps its own fit to weigh the alternatives.

    python bench/choices.py [--csv PATH] [--profile full|quick] [--choices 1,2,3,4]
"""

from __future__ import annotations

import argparse
import bisect
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.model_selection import GroupKFold, GroupShuffleSplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from readmission.estimator import ReadmissionModel, expired_mask  # noqa: E402
from readmission.features import (  # noqa: E402
    HIGH_CARDINALITY,
    NUMERIC,
    TREE_CATEGORICAL,
    CategoryCodes,
    EncounterFeatures,
    code_number,
)
from readmission.names import PROFILES  # noqa: E402
from readmission.training import SEARCH  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--profile", choices=PROFILES, default="full")
    parser.add_argument(
        "--choices", default="1,2,3,4", help="which choices to measure (comma-separated)"
    )
    args = parser.parse_args()
    chosen = {int(c) for c in args.choices.split(",") if c.strip()}

    from tests.support.tools import real_csv

    csv = args.csv or real_csv()
    if csv is None:
        print("the real UCI file is needed: set DIABETES_CSV or pass --csv", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="readmission-choices-"))
    os.environ.update({"READMISSION_STATE_DIR": str(work / "state"), "DIABETES_CSV": str(csv)})

    from readmission import evaluation, pipeline, training
    from readmission.features import FAMILIES, build_pipeline

    pipeline.load_raw_batches(pipeline.plan_raw_load())
    pipeline.clean_new_rows()
    data = training.load_training_data(pipeline.engine())

    def figures(model: ReadmissionModel) -> dict[str, float]:
        """Tune the decision rule on valid; macro-F1 and AUC of <30 on valid and test."""
        out = {}
        model.tune_decision(data.inputs("valid"), data.target("valid"))
        for split in ("valid", "test"):
            proba = model.predict_proba(data.inputs(split))
            scores = evaluation.metrics(
                data.target(split), proba, list(model.classes_), model.decide(proba)
            )
            out[f"{split}_macro_f1"] = scores["macro_f1"]
            out[f"{split}_roc_auc_lt30"] = scores["roc_auc_lt30"]
        return out

    rows: list[tuple[str, dict[str, float]]] = []
    if chosen & {1, 2}:
        candidates = {}
        for family in FAMILIES:
            candidate = training.fit_candidate(family, data, args.profile)
            candidates[family] = candidate
            rows.append((family, figures(candidate.model)))

    if 1 in chosen:
        boosting = candidates["hist_gradient_boosting"]
        native = build_pipeline("hist_gradient_boosting", boosting.params)
        native.set_params(classify__categorical_features="from_dtype")
        native.steps[1] = ("encode", _CategoricalFrame())
        model = ReadmissionModel(native)
        model.fit(data.inputs("train"), data.target("train"), groups=data.patients("train"))
        rows.append(("hist_gradient_boosting, native categories", figures(model)))

    if 2 in chosen:
        average = _Averaged([c.model for c in candidates.values()])
        rows.append(("average of the three families", figures(average)))

    if chosen & {3, 4}:
        rows.extend(_libraries_and_diagnoses(data, args.profile, chosen, figures))

    costs = any("fit_seconds" in found for _, found in rows)
    print(
        f"{'model':<52}{'valid macro-F1':>16}{'valid AUC <30':>15}"
        f"{'test macro-F1':>15}{'test AUC <30':>14}"
        + (f"{'fit s':>8}{'1 row ms':>10}{'1000 rows ms':>14}" if costs else "")
    )
    for name, found in rows:
        line = (
            f"{name:<52}{found['valid_macro_f1']:>16.4f}{found['valid_roc_auc_lt30']:>15.4f}"
            f"{found['test_macro_f1']:>15.4f}{found['test_roc_auc_lt30']:>14.4f}"
        )
        if "fit_seconds" in found:
            line += (
                f"{found['fit_seconds']:>8.1f}{found['predict_1_ms']:>10.2f}"
                f"{found['predict_1000_ms']:>14.1f}"
            )
        print(line)
    print(
        "\nchosen on valid (test: report only): 1 codes as numbers vs native categories, "
        "2 best single family vs the average, 3 the boosting library, 4 how the trees see "
        "the diagnoses"
    )
    return 0


class _Averaged(ReadmissionModel):
    """The mean of fitted models' probabilities, with a decision rule of its own."""

    def __init__(self, models) -> None:
        self.models = models
        self.classes_ = models[0].classes_
        self.decision_weights_ = {str(c): 1.0 for c in self.classes_}

    def predict_proba(self, frame):
        return np.mean([m.predict_proba(frame) for m in self.models], axis=0)


class _CategoricalFrame(TransformerMixin, BaseEstimator):
    """The tree inputs as a frame whose text columns are pandas categoricals, so that
    HistGradientBoosting's `categorical_features="from_dtype"` treats them natively."""

    def fit(self, frame, y=None):  # noqa: ARG002
        self.categories_ = {
            name: sorted({str(v) for v in frame[name].dropna()}) for name in TREE_CATEGORICAL
        }
        return self

    def transform(self, frame):
        columns = {}
        for name, categories in self.categories_.items():
            values = frame[name].astype(object)
            known = values.where(values.isin(categories))  # unseen ones: missing
            columns[name] = pd.Categorical(known, categories=categories)
        columns.update({name: frame[name].astype(float) for name in NUMERIC})
        return pd.DataFrame(columns, index=frame.index)


#: Choice 3's searches, a few configurations each around what works on tabular data of this
#: size (61k rows, ~120 features), every one stopped early on whole patients.
#: LightGBM's are the served family's own (`training.SEARCH`).
LIGHTGBM_SEARCH: dict[str, list[dict]] = {
    profile: SEARCH[profile]["lightgbm"] for profile in PROFILES
}
XGBOOST_SEARCH: dict[str, list[dict]] = {
    "full": [
        {
            "max_depth": 4,
            "learning_rate": 0.05,
            "min_child_weight": 20,
            "subsample": 0.8,
            "colsample_bytree": 0.5,
            "reg_lambda": 5.0,
        },
        {
            "max_depth": 3,
            "learning_rate": 0.1,
            "min_child_weight": 10,
            "subsample": 0.8,
            "colsample_bytree": 0.7,
            "reg_lambda": 1.0,
        },
    ],
    "quick": [{"max_depth": 4, "learning_rate": 0.1, "min_child_weight": 20}],
}
#: Rounds without a better holdout log-loss before LightGBM and XGBoost stop.
STOPPING_ROUNDS = 50
#: Share of the train split's patients held out for early stopping (HistGradientBoosting's
#: validation_fraction, which `ReadmissionModel.fit` draws by patient too).
STOPPING_SHARE = 0.1
#: At most two threads: the machine has two cores.
THREADS = 2

#: The first code of each ICD-9-CM section (the tabular list's blocks, e.g. 410-414 ischaemic
#: heart disease), with a few frequent 3-digit categories given their own range, as the
#: Clinical Classifications Software does (250 diabetes, 428 heart failure, 584-586 renal
#: failure, 599 urinary tract disorders, 491-492 chronic bronchitis and emphysema, 820 hip
#: fracture, 996-998 complications of care, V57-V58 rehabilitation and aftercare).
ICD9_SECTIONS: tuple[str, ...] = (
    *("001", "010", "020", "030", "042", "045", "050", "060", "070", "080", "090"),
    *("100", "110", "120", "130", "137"),
    *("140", "150", "160", "170", "174", "179", "190", "196", "200", "209", "210"),
    *("230", "235", "239"),
    *("240", "249", "250", "251", "260", "270", "276", "277", "278", "279"),
    *("280", "286", "288"),
    *("290", "295", "300", "303", "306", "317"),
    *("320", "330", "338", "340", "350", "360", "380"),
    *("390", "393", "401", "410", "415", "420", "426", "428", "429", "430", "440", "451"),
    *("460", "470", "480", "490", "491", "493", "494", "500", "510"),
    *("520", "530", "540", "550", "555", "560", "570", "574", "577", "578", "579"),
    *("580", "584", "587", "590", "599", "600", "610", "614", "617"),
    *("630", "640", "650", "660", "670", "678"),
    *("680", "690", "700", "710", "720", "725", "730", "740", "760"),
    *("780", "790", "797"),
    *("800", "805", "810", "820", "821", "830", "840", "850", "860", "870", "880", "890"),
    *("900", "905", "910", "920", "925", "930", "940", "950", "958", "960", "980", "990"),
    *("996", "999"),
    *("V01", "V07", "V10", "V20", "V30", "V40", "V45", "V50", "V57", "V59", "V60", "V66"),
    *("V67", "V70", "V83", "V85", "V86"),
    *("E800", "E849", "E870", "E880", "E890", "E929", "E930", "E950", "E960", "E970"),
)


_SECTION_STARTS = [code_number(code) for code in ICD9_SECTIONS]
assert sorted(_SECTION_STARTS) == _SECTION_STARTS, "ICD9_SECTIONS must be in code order"


def _section(number: float) -> float:
    """The position of a code's section in `ICD9_SECTIONS` (ordered), NaN for missing."""
    if number != number:
        return np.nan
    return float(max(bisect.bisect_right(_SECTION_STARTS, number) - 1, 0))


_RAW_DIAGNOSES = tuple(name.removesuffix("_category") for name in HIGH_CARDINALITY)


class _TreeInputs(TransformerMixin, BaseEstimator):
    """What `CategoryCodes` gives the trees (TREE_CATEGORICAL as codes, NUMERIC), plus
    optional columns of each of the three diagnoses:

    - `rates`: its 3-digit ICD-9 category's share of `<30` and of `>30` in train, smoothed
      towards the overall share (m-estimate, `smoothing` pseudo-rows), and the category's
      log count in train; the rows it is fitted on get out-of-fold shares
      (`fit_out_of_fold`, folds of whole patients);
    - `sections`: the position of its ICD-9-CM section (`ICD9_SECTIONS`), an ordered number;
    - `numbers`: the code itself as an ordered number (the trees choose the ranges).
    """

    def __init__(
        self,
        rates: bool = False,
        sections: bool = False,
        numbers: bool = False,
        smoothing: float = 20.0,
        folds: int = 5,
    ) -> None:
        self.rates = rates
        self.sections = sections
        self.numbers = numbers
        self.smoothing = smoothing
        self.folds = folds

    def fit(self, frame, y=None, groups=None):  # noqa: ARG002
        self.codes_ = CategoryCodes(TREE_CATEGORICAL, NUMERIC).fit(frame)
        if self.rates:
            self.tables_ = self._tables(frame, np.asarray(y, dtype=object))
        return self

    def fit_out_of_fold(self, frame, y, groups, rows) -> np.ndarray:
        """Fit: category codes on every row of `frame`, target shares on `rows` only; return
        the encoding of `rows`, their shares out of fold (a patient's rows in one fold)."""
        y = np.asarray(y, dtype=object)
        self.codes_ = CategoryCodes(TREE_CATEGORICAL, NUMERIC).fit(frame)
        subset = frame.iloc[rows]
        if self.rates:
            self.tables_ = self._tables(subset, y[rows])
        out = self.transform(subset)
        if self.rates:
            first = len(TREE_CATEGORICAL) + len(NUMERIC)
            for fitted, held in GroupKFold(self.folds).split(subset, groups=groups[rows]):
                tables = self._tables(subset.iloc[fitted], y[rows][fitted])
                shares = self._shares(subset.iloc[held], tables)
                for k in range(len(HIGH_CARDINALITY)):
                    out[held, first + 3 * k : first + 3 * k + 2] = shares[k]
        return out

    def _tables(self, frame, y) -> dict:
        prior = {c: float(np.mean(y == c)) for c in ("<30", ">30")}
        tables = {"prior": prior}
        for name in HIGH_CARDINALITY:
            values = pd.Series(frame[name].to_numpy(dtype=object))
            counts = values.value_counts()
            table = {}
            for label in ("<30", ">30"):
                hits = values[y == label].value_counts().reindex(counts.index, fill_value=0)
                table[label] = (hits + self.smoothing * prior[label]) / (counts + self.smoothing)
            tables[name] = {
                "<30": table["<30"].to_dict(),
                ">30": table[">30"].to_dict(),
                "log_count": np.log1p(counts).to_dict(),
            }
        return tables

    def _shares(self, frame, tables) -> list[np.ndarray]:
        prior = tables["prior"]
        found = []
        for name in HIGH_CARDINALITY:
            values = frame[name].to_numpy(dtype=object)
            table = tables[name]
            columns = [
                [
                    table[label].get(v, prior[label]) if isinstance(v, str) else np.nan
                    for v in values
                ]
                for label in ("<30", ">30")
            ]
            found.append(np.array(columns, dtype=float).T)
        return found

    def transform(self, frame) -> np.ndarray:
        parts = [self.codes_.transform(frame)]
        if self.rates:
            for name, shares in zip(
                HIGH_CARDINALITY, self._shares(frame, self.tables_), strict=True
            ):
                counts = self.tables_[name]["log_count"]
                values = frame[name].to_numpy(dtype=object)
                log_count = [counts.get(v, 0.0) if isinstance(v, str) else np.nan for v in values]
                parts.append(np.column_stack([shares, log_count]))
        if self.sections or self.numbers:
            for name in _RAW_DIAGNOSES:
                numbers = [code_number(v) for v in frame[name].to_numpy(dtype=object)]
                if self.numbers:
                    parts.append(np.array(numbers, dtype=float)[:, None])
                if self.sections:
                    parts.append(np.array([_section(n) for n in numbers], dtype=float)[:, None])
        return np.column_stack(parts) if len(parts) > 1 else parts[0]


class _Features(TransformerMixin, BaseEstimator):
    """`EncounterFeatures` keeping the raw diagnosis codes, for `ICD9_SECTIONS` and the codes
    as numbers."""

    def fit(self, frame, y=None):  # noqa: ARG002
        self.features_ = EncounterFeatures().fit(frame)
        return self

    def transform(self, frame):
        out = self.features_.transform(frame)
        for name in _RAW_DIAGNOSES:
            out[name] = frame[name].to_numpy(dtype=object) if name in frame else np.nan
        return out


class _Chain:
    """Fitted features, encoding and classifier, called in turn (what a fitted Pipeline
    does)."""

    def __init__(self, features, encoding, classifier) -> None:
        self.features, self.encoding, self.classifier = features, encoding, classifier

    def predict_proba(self, frame):
        return self.classifier.predict_proba(
            self.encoding.transform(self.features.transform(frame))
        )


class _Boosted(ReadmissionModel):
    """Features, `encoding` and a boosting classifier (`library`), fitted as
    `ReadmissionModel.fit` fits the served one: expired encounters left out, early stopping
    on a holdout of whole patients. Target shares in the encoding are learnt from the fitted
    rows only, out of fold for those rows, so neither the trees nor the stopping rule see a
    row's own target through them."""

    def __init__(
        self, library: str, params: dict, encoding=None, native: bool = False, seed: int = 0
    ):
        self.library = library
        self.params = params
        self.encoding = encoding
        self.native = native
        self.seed = seed

    def fit(self, frame, y, groups=None):
        keep = ~expired_mask(frame)
        frame = frame.loc[keep]
        y = np.asarray(y, dtype=object)[keep]
        groups = np.asarray(groups)[keep]
        features = _Features().fit(frame)
        inputs = features.transform(frame)
        fitted, held = next(
            GroupShuffleSplit(n_splits=1, test_size=STOPPING_SHARE, random_state=self.seed).split(
                inputs, y, groups
            )
        )
        encoding = clone(self.encoding) if self.encoding is not None else _TreeInputs()
        x_fit = encoding.fit_out_of_fold(inputs, y, groups, fitted)
        x_held = encoding.transform(inputs.iloc[held])
        self.classes_ = np.unique(y)
        labels = np.searchsorted(self.classes_, y)  # class indices, in classes_ order
        classifier = _classifier(self.library, self.params, self.seed)
        if self.library == "hist_gradient_boosting":
            classifier.fit(x_fit, y[fitted], X_val=x_held, y_val=y[held])
        elif self.library == "lightgbm":
            import lightgbm

            categorical = list(range(len(TREE_CATEGORICAL))) if self.native else "auto"
            classifier.fit(
                x_fit,
                labels[fitted],
                eval_X=(x_held,),
                eval_y=(labels[held],),
                categorical_feature=categorical,
                callbacks=[lightgbm.early_stopping(STOPPING_ROUNDS, verbose=False)],
            )
        else:
            classifier.fit(x_fit, labels[fitted], eval_set=[(x_held, labels[held])], verbose=False)
        self.pipeline_ = _Chain(features, encoding, classifier)
        self.decision_weights_ = {str(c): 1.0 for c in self.classes_}
        return self


def _classifier(library: str, params: dict, seed: int = 0):
    if library == "hist_gradient_boosting":
        from readmission.features import build_pipeline

        return build_pipeline(library, params, seed).steps[-1][1]  # exactly the served classifier
    if library == "lightgbm":
        import lightgbm

        return lightgbm.LGBMClassifier(
            objective="multiclass",
            n_estimators=5000,
            n_jobs=THREADS,
            random_state=seed,
            verbose=-1,
            **params,
        )
    import xgboost

    return xgboost.XGBClassifier(
        objective="multi:softprob",
        eval_metric="mlogloss",
        n_estimators=5000,
        early_stopping_rounds=STOPPING_ROUNDS,
        tree_method="hist",
        n_jobs=THREADS,
        random_state=seed,
        **params,
    )


def _tune(data, library: str, space: list[dict], native: bool = False) -> dict:
    """The configuration with the lowest log-loss on the patient-grouped 20 % holdout of
    train that `training.tune` scores the served families on."""
    from readmission import evaluation, schema

    if len(space) == 1:
        return dict(space[0])
    train = data.frames["train"]
    inner, holdout = next(
        GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=0).split(
            train, groups=train[schema.PATIENT_ID]
        )
    )
    x, y, patients = data.inputs("train"), data.target("train"), data.patients("train")
    losses = []
    for params in space:
        model = _Boosted(library, params, native=native)
        model.fit(x.iloc[inner], y.iloc[inner], groups=patients.iloc[inner])
        proba = model.predict_proba(x.iloc[holdout])
        found = evaluation.metrics(
            y.iloc[holdout], proba, list(model.classes_), model.decide(proba)
        )
        losses.append(found["log_loss"])
        print(
            f"  {library}{' native' if native else ''} {params}: holdout log-loss "
            f"{found['log_loss']:.4f}",
            flush=True,
        )
    best = dict(space[int(np.argmin(losses))])
    print(f"  {library}{' native' if native else ''} chosen: {best}", flush=True)
    return best


def _serving_cost(model: ReadmissionModel, frame: pd.DataFrame) -> dict[str, float]:
    """Milliseconds of `predict_proba` for 1 row and for 1,000 rows (median of repeats)."""
    out = {}
    for rows, repeats in ((1, 30), (1000, 7)):
        batch = frame.iloc[:rows]
        model.predict_proba(batch)  # warm up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.predict_proba(batch)
            times.append(time.perf_counter() - started)
        out[f"predict_{rows}_ms"] = 1000 * statistics.median(times)
    return out


def _libraries_and_diagnoses(data, profile: str, chosen: set[int], figures) -> list:
    """Choices 3 and 4: each alternative fitted on train (timed), its decision rule tuned
    and its figures taken by `figures`, its serving cost measured on valid rows."""
    from readmission import training
    from readmission.features import build_pipeline

    try:
        import lightgbm  # noqa: F401
    except ImportError:
        print("choices 3 and 4 skipped: pip install lightgbm xgboost", file=sys.stderr)
        return []
    x, y, patients = data.inputs("train"), data.target("train"), data.patients("train")
    valid = data.inputs("valid")
    rows = []

    def measure(name: str, model: ReadmissionModel) -> None:
        started = time.perf_counter()
        model.fit(x, y, groups=patients)
        seconds = time.perf_counter() - started
        found = {"fit_seconds": seconds, **figures(model), **_serving_cost(model, valid)}
        print(
            f"  {name}: valid macro-F1 {found['valid_macro_f1']:.4f}, AUC <30 "
            f"{found['valid_roc_auc_lt30']:.4f} ({seconds:.0f} s)",
            flush=True,
        )
        rows.append((name, found))

    served, _ = training.tune("hist_gradient_boosting", data, profile)
    print(f"  hist_gradient_boosting chosen: {served}", flush=True)
    measure(
        "hist_gradient_boosting (served), chapters",
        ReadmissionModel(build_pipeline("hist_gradient_boosting", served)),
    )
    lgbm = _tune(data, "lightgbm", LIGHTGBM_SEARCH[profile])
    if 3 in chosen:
        measure("lightgbm, codes as numbers", _Boosted("lightgbm", lgbm))
        native = _tune(data, "lightgbm", LIGHTGBM_SEARCH[profile], native=True)
        measure("lightgbm, native categories", _Boosted("lightgbm", native, native=True))
        try:
            import xgboost  # noqa: F401
        except ImportError:
            print("xgboost skipped: pip install xgboost", file=sys.stderr)
        else:
            params = _tune(data, "xgboost", XGBOOST_SEARCH[profile])
            measure("xgboost, codes as numbers", _Boosted("xgboost", params))
    if 4 in chosen:
        control = "only (this harness, the control)"
        variants = {
            control: _TreeInputs(),
            "+ 3-digit categories target-encoded": _TreeInputs(rates=True),
            "+ ICD-9 sections": _TreeInputs(sections=True),
            "+ codes as ordered numbers": _TreeInputs(numbers=True),
        }
        for library, params in (("hist_gradient_boosting", served), ("lightgbm", lgbm)):
            short = "hgb" if library == "hist_gradient_boosting" else library
            for name, encoding in variants.items():
                if library == "lightgbm" and name == control and 3 in chosen:
                    continue  # measured as choice 3's "lightgbm, codes as numbers"
                measure(f"{short}, chapters {name}", _Boosted(library, params, encoding))
    return rows


if __name__ == "__main__":
    sys.exit(main())
