"""The 50 columns of the UCI file, defined once.

Every other list of columns derives from `COLUMNS`: the SQL tables, the CSV header check,
the cleaning rules, and later the API request model, the Streamlit form and the Locust
payloads. Names are kept as in the UCI header (`A1Cresult`, `glyburide-metformin`);
`Column.key` is the snake_case name used in the databases and after cleaning.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Kind(StrEnum):
    """What a column is, which decides its SQL type and how it is cleaned."""

    IDENTIFIER = "identifier"  # encounter_id, patient_nbr: never a feature
    COUNT = "count"  # a non-negative integer with a plausible range
    CODE = "code"  # a nominal integer code from IDs_mapping.csv
    CATEGORY = "category"  # a text value from a closed set
    DIAGNOSIS = "diagnosis"  # an ICD-9-CM code (open set, grouped by cleaning)
    TARGET = "target"  # readmitted


@dataclass(frozen=True)
class Column:
    """One column of the UCI file."""

    name: str
    kind: Kind
    description: str
    categories: tuple[str, ...] = ()
    codes: MappingProxyType[int, str] = field(default_factory=lambda: MappingProxyType({}))
    minimum: int | None = None
    maximum: int | None = None
    typical: str | int | None = None

    @property
    def key(self) -> str:
        """snake_case name used in SQL tables and cleaned frames (`A1Cresult` -> `a1cresult`)."""
        return to_key(self.name)

    @property
    def is_integer(self) -> bool:
        """Stored as an integer in the raw table (identifiers, counts, codes)."""
        return self.kind in (Kind.IDENTIFIER, Kind.COUNT, Kind.CODE)

    @property
    def is_feature(self) -> bool:
        """May feed a model (everything but identifiers and the target)."""
        return self.kind not in (Kind.IDENTIFIER, Kind.TARGET)


def to_key(name: str) -> str:
    """The snake_case key of a column name: lower case, hyphens and spaces to underscores."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def words(text: str) -> tuple[str, ...]:
    """The whitespace-separated words of a block of text: a long list of codes kept readable
    (and out of the formatter's one-item-a-line layout)."""
    return tuple(text.split())


MISSING_MARKER = "?"  # how the UCI file writes a missing value
DRUG_LEVELS = ("No", "Steady", "Up", "Down")
AGE_BRACKETS = tuple(f"[{lo}-{lo + 10})" for lo in range(0, 100, 10))
WEIGHT_BRACKETS = (*(f"[{lo}-{lo + 25})" for lo in range(0, 200, 25)), ">200")
READMITTED_CLASSES = ("NO", ">30", "<30")

ADMISSION_TYPES = MappingProxyType(
    {
        1: "Emergency",
        2: "Urgent",
        3: "Elective",
        4: "Newborn",
        5: "Not Available",
        6: "NULL",
        7: "Trauma Center",
        8: "Not Mapped",
    }
)
DISCHARGE_DISPOSITIONS = MappingProxyType(
    {
        1: "Discharged to home",
        2: "Discharged/transferred to another short term hospital",
        3: "Discharged/transferred to SNF",
        4: "Discharged/transferred to ICF",
        5: "Discharged/transferred to another type of inpatient care institution",
        6: "Discharged/transferred to home with home health service",
        7: "Left AMA",
        8: "Discharged/transferred to home under care of Home IV provider",
        9: "Admitted as an inpatient to this hospital",
        10: "Neonate discharged to another hospital for neonatal aftercare",
        11: "Expired",
        12: "Still patient or expected to return for outpatient services",
        13: "Hospice / home",
        14: "Hospice / medical facility",
        15: "Discharged/transferred within this institution to Medicare approved swing bed",
        16: "Discharged/transferred/referred another institution for outpatient services",
        17: "Discharged/transferred/referred to this institution for outpatient services",
        18: "NULL",
        19: "Expired at home. Medicaid only, hospice.",
        20: "Expired in a medical facility. Medicaid only, hospice.",
        21: "Expired, place unknown. Medicaid only, hospice.",
        22: "Discharged/transferred to another rehab fac including rehab units of a hospital",
        23: "Discharged/transferred to a long term care hospital",
        24: "Discharged/transferred to a nursing facility certified under Medicaid "
        "but not certified under Medicare",
        25: "Not Mapped",
        26: "Unknown/Invalid",
        27: "Discharged/transferred to a federal health care facility",
        28: "Discharged/transferred/referred to a psychiatric hospital or psychiatric "
        "distinct part unit of a hospital",
        29: "Discharged/transferred to a Critical Access Hospital (CAH)",
        30: "Discharged/transferred to another type of health care institution "
        "not defined elsewhere",
    }
)
ADMISSION_SOURCES = MappingProxyType(
    {
        1: "Physician Referral",
        2: "Clinic Referral",
        3: "HMO Referral",
        4: "Transfer from a hospital",
        5: "Transfer from a Skilled Nursing Facility (SNF)",
        6: "Transfer from another health care facility",
        7: "Emergency Room",
        8: "Court/Law Enforcement",
        9: "Not Available",
        10: "Transfer from critical access hospital",
        11: "Normal Delivery",
        12: "Premature Delivery",
        13: "Sick Baby",
        14: "Extramural Birth",
        15: "Not Available",
        17: "NULL",
        18: "Transfer From Another Home Health Agency",
        19: "Readmission to Same Home Health Agency",
        20: "Not Mapped",
        21: "Unknown/Invalid",
        22: "Transfer from hospital inpt/same fac reslt in a sep claim",
        23: "Born inside this hospital",
        24: "Born outside this hospital",
        25: "Transfer from Ambulatory Surgery Center",
        26: "Transfer from Hospice",
    }
)
#: Codes whose label says the value is unknown ("NULL", "Not Available", ...).
UNKNOWN_CODE_LABELS = frozenset({"NULL", "Not Available", "Not Mapped", "Unknown/Invalid"})
#: Discharges after which a readmission cannot happen: the patient died. Hospice (13, 14)
#: is not death: 86 of the file's 771 hospice encounters were readmitted (43 within 30 days).
EXPIRED_DISPOSITIONS = frozenset({11, 19, 20, 21})

#: Codes of the file's `payer_code` (Medicare, Blue Cross, self-pay, ...), one word each.
PAYER_CODES: tuple[str, ...] = words(
    """
    MC HM SP BC MD CP UN CM OG PO DM CH WC OT MP SI FR
    """
)
MEDICAL_SPECIALTIES: tuple[str, ...] = words(
    """
    InternalMedicine Emergency/Trauma Family/GeneralPractice Cardiology Surgery-General
    Nephrology Orthopedics Orthopedics-Reconstructive Radiologist Pulmonology Psychiatry
    Urology ObstetricsandGynecology Surgery-Cardiovascular/Thoracic Gastroenterology
    Surgery-Vascular Surgery-Neuro PhysicalMedicineandRehabilitation Oncology Pediatrics
    Hematology/Oncology Neurology Pediatrics-Endocrinology Otolaryngology Endocrinology
    Surgery-Thoracic Psychology Podiatry Surgery-Cardiovascular Pediatrics-CriticalCare
    Hematology Gynecology Hospitalist Radiology Surgeon Surgery-Plastic Osteopath
    Ophthalmology InfectiousDiseases SurgicalSpecialty Obsterics&Gynecology-GynecologicOnco
    Pediatrics-Pulmonology Anesthesiology-Pediatric Obstetrics Rheumatology Pathology
    Anesthesiology OutreachServices Surgery-Colon&Rectal Surgery-Maxillofacial
    PhysicianNotFound Pediatrics-Neurology Surgery-Pediatric Endocrinology-Metabolism
    Psychiatry-Child/Adolescent AllergyandImmunology Cardiology-Pediatric DCPTEAM
    Pediatrics-Hematology-Oncology Dentistry Pediatrics-EmergencyMedicine
    Pediatrics-AllergyandImmunology Resident Surgery-PlasticwithinHeadandNeck
    Pediatrics-InfectiousDiseases Psychiatry-Addictive Proctology Dermatology SportsMedicine
    Speech Perinatology Neurophysiology
    """
)
MEDICATIONS: tuple[str, ...] = words(
    """
    metformin repaglinide nateglinide chlorpropamide glimepiride acetohexamide glipizide
    glyburide tolbutamide pioglitazone rosiglitazone acarbose miglitol troglitazone
    tolazamide examide citoglipton insulin glyburide-metformin glipizide-metformin
    glimepiride-pioglitazone metformin-rosiglitazone metformin-pioglitazone
    """
)


def _count(name: str, low: int, high: int, typical: int, description: str) -> Column:
    return Column(name, Kind.COUNT, description, minimum=low, maximum=high, typical=typical)


def _category(name: str, categories: tuple[str, ...], typical: str, description: str) -> Column:
    return Column(name, Kind.CATEGORY, description, categories=categories, typical=typical)


def _code(name: str, codes: MappingProxyType[int, str], typical: int, description: str) -> Column:
    return Column(name, Kind.CODE, description, codes=codes, typical=typical)


# Ranges of counts are plausibility bounds (what a request may carry), wider than the
# values seen in the file, except `time_in_hospital` (1-14 days by the data set's definition)
# and `number_diagnoses` (the source database stores at most 16).
COLUMNS: tuple[Column, ...] = (
    Column("encounter_id", Kind.IDENTIFIER, "Unique identifier of the encounter"),
    Column("patient_nbr", Kind.IDENTIFIER, "Unique identifier of the patient"),
    _category(
        "race", ("Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other"), "Caucasian", "Race"
    ),
    _category("gender", ("Female", "Male", "Unknown/Invalid"), "Female", "Gender"),
    _category("age", AGE_BRACKETS, "[70-80)", "Age, grouped in 10-year brackets"),
    _category("weight", WEIGHT_BRACKETS, "[75-100)", "Weight in pounds (97% missing)"),
    _code("admission_type_id", ADMISSION_TYPES, 1, "Type of admission (IDs_mapping.csv)"),
    _code(
        "discharge_disposition_id",
        DISCHARGE_DISPOSITIONS,
        1,
        "Where the patient was discharged to (IDs_mapping.csv)",
    ),
    _code("admission_source_id", ADMISSION_SOURCES, 7, "Source of admission (IDs_mapping.csv)"),
    _count("time_in_hospital", 1, 14, 3, "Days between admission and discharge"),
    _category("payer_code", PAYER_CODES, "MC", "Payer (Medicare, Blue Cross, self-pay, ...)"),
    _category(
        "medical_specialty",
        MEDICAL_SPECIALTIES,
        "InternalMedicine",
        "Specialty of the admitting physician",
    ),
    _count("num_lab_procedures", 0, 300, 44, "Lab tests performed during the encounter"),
    _count("num_procedures", 0, 50, 1, "Procedures (other than lab tests) performed"),
    _count("num_medications", 0, 200, 15, "Distinct generic drugs administered"),
    _count("number_outpatient", 0, 200, 0, "Outpatient visits in the year before"),
    _count("number_emergency", 0, 200, 0, "Emergency visits in the year before"),
    _count("number_inpatient", 0, 200, 0, "Inpatient visits in the year before"),
    Column("diag_1", Kind.DIAGNOSIS, "Primary diagnosis (ICD-9-CM)", typical="428"),
    Column("diag_2", Kind.DIAGNOSIS, "Secondary diagnosis (ICD-9-CM)", typical="276"),
    Column("diag_3", Kind.DIAGNOSIS, "Additional secondary diagnosis (ICD-9-CM)", typical="250"),
    _count("number_diagnoses", 1, 16, 8, "Diagnoses entered in the system"),
    _category(
        "max_glu_serum",
        ("None", "Norm", ">200", ">300"),
        "None",
        "Glucose serum test result ('None': not measured)",
    ),
    _category(
        "A1Cresult",
        ("None", "Norm", ">7", ">8"),
        "None",
        "HbA1c test result ('None': not measured)",
    ),
    *(
        _category(drug, DRUG_LEVELS, "No", f"Prescription of {drug} and its dose change")
        for drug in MEDICATIONS
    ),
    _category("change", ("No", "Ch"), "No", "Any change in diabetic medication"),
    _category("diabetesMed", ("No", "Yes"), "Yes", "Any diabetic medication prescribed"),
    Column(
        "readmitted",
        Kind.TARGET,
        "Readmitted within 30 days, after 30 days, or not",
        categories=READMITTED_CLASSES,
    ),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
COLUMN_KEYS: tuple[str, ...] = tuple(c.key for c in COLUMNS)
BY_NAME: MappingProxyType[str, Column] = MappingProxyType({c.name: c for c in COLUMNS})
BY_KEY: MappingProxyType[str, Column] = MappingProxyType({c.key: c for c in COLUMNS})

ENCOUNTER_ID = "encounter_id"
PATIENT_ID = "patient_nbr"
TARGET = "readmitted"
IDENTIFIERS: tuple[str, ...] = tuple(c.key for c in COLUMNS if c.kind is Kind.IDENTIFIER)
FEATURES: tuple[Column, ...] = tuple(c for c in COLUMNS if c.is_feature)
#: What a request must carry: what every real encounter records (the UCI file never lacks
#: it) and whose absence has no documented meaning. Absent lab results mean "not taken"
#: and absent drugs "not prescribed" (cleaning rules 3 and 4); race, weight, payer,
#: specialty and the diagnoses are missing in the file itself. Keys, not UCI names.
REQUIRED_IN_REQUEST: frozenset[str] = frozenset(
    {
        "gender",
        "age",
        "admission_type_id",
        "discharge_disposition_id",
        "admission_source_id",
        "time_in_hospital",
        "num_lab_procedures",
        "num_procedures",
        "num_medications",
        "number_outpatient",
        "number_emergency",
        "number_inpatient",
        "number_diagnoses",
        "change",
        "diabetesmed",
    }
)


def columns_of(kind: Kind) -> Iterator[Column]:
    """The columns of one kind, in file order."""
    return (c for c in COLUMNS if c.kind is kind)


def key_aliases() -> dict[str, str]:
    """Every accepted spelling of a column mapped to its key.

    The UCI name, the key itself, and the forms the original project's clients sent
    (lower case, underscores for hyphens) all map to the key.
    """
    aliases: dict[str, str] = {}
    for column in COLUMNS:
        for alias in (column.name, column.key, column.name.lower(), column.name.replace("-", "_")):
            aliases[alias] = column.key
    return aliases


def check_header(header: list[str]) -> None:
    """Refuse a header that misses columns or carries unknown ones, naming them all."""
    missing = [name for name in COLUMN_NAMES if name not in header]
    unknown = [name for name in header if name not in BY_NAME]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    problems = []
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown columns: {', '.join(unknown)}")
    if duplicated:
        problems.append(f"duplicated columns: {', '.join(duplicated)}")
    if problems:
        raise SchemaError("the CSV header does not match the UCI schema: " + "; ".join(problems))


class SchemaError(ValueError):
    """A file or frame does not have the columns of the UCI schema."""


def request_records(rows: list[dict]) -> list[dict]:
    """Rows of the file (values as read, text) as a client sends them to the API: without
    the outcome, integers as numbers, '?' and blanks left as they are."""
    integers = [column.name for column in COLUMNS if column.is_integer]
    records = []
    for row in rows:
        record = {name: value for name, value in row.items() if name != TARGET}
        for name in integers:
            value = record.get(name)
            if value not in (None, "?", ""):
                record[name] = int(value)
        records.append(record)
    return records
