"""ICD-9-CM codes: their shapes, one spelling each, and the chapters cleaning groups them
into (rule 10 of `readmission.cleaning`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from readmission.cleaning.values import INVALID, VALID, as_text


@dataclass(frozen=True)
class Icd9Chapter:
    """A range of ICD-9-CM codes and the group name `diag_N_group` gives it."""

    group: str
    prefix: Literal["", "V", "E"]  # numeric codes have none
    first: int  # inclusive, the number after the prefix, without decimals
    last: int
    title: str


#: Chapters of the ICD-9-CM tabular list (CDC/NCHS, ICD-9-CM volume 1, with its V and E
#: supplementary classifications), with diabetes (250.x) split out of the endocrine
#: chapter because it is this data set's subject; Strack et al. (2014, BioMed Res. Int.
#: 781670) grouped the diagnoses similarly. The first chapter that contains a code wins,
#: hence diabetes comes before the endocrine chapter it is carved from.
ICD9_CHAPTERS: tuple[Icd9Chapter, ...] = (
    Icd9Chapter("infectious", "", 1, 139, "Infectious and parasitic diseases"),
    Icd9Chapter("neoplasms", "", 140, 239, "Neoplasms"),
    Icd9Chapter("diabetes", "", 250, 250, "Diabetes mellitus (250.x)"),
    Icd9Chapter(
        "endocrine_metabolic",
        "",
        240,
        279,
        "Endocrine, nutritional and metabolic diseases, and immunity disorders (except 250.x)",
    ),
    Icd9Chapter("blood", "", 280, 289, "Diseases of the blood and blood-forming organs"),
    Icd9Chapter("mental", "", 290, 319, "Mental disorders"),
    Icd9Chapter("nervous_sense", "", 320, 389, "Diseases of the nervous system and sense organs"),
    Icd9Chapter("circulatory", "", 390, 459, "Diseases of the circulatory system"),
    Icd9Chapter("respiratory", "", 460, 519, "Diseases of the respiratory system"),
    Icd9Chapter("digestive", "", 520, 579, "Diseases of the digestive system"),
    Icd9Chapter("genitourinary", "", 580, 629, "Diseases of the genitourinary system"),
    Icd9Chapter(
        "pregnancy", "", 630, 679, "Complications of pregnancy, childbirth, and the puerperium"
    ),
    Icd9Chapter("skin", "", 680, 709, "Diseases of the skin and subcutaneous tissue"),
    Icd9Chapter(
        "musculoskeletal",
        "",
        710,
        739,
        "Diseases of the musculoskeletal system and connective tissue",
    ),
    Icd9Chapter("congenital", "", 740, 759, "Congenital anomalies"),
    Icd9Chapter(
        "perinatal", "", 760, 779, "Certain conditions originating in the perinatal period"
    ),
    Icd9Chapter(
        "symptoms_ill_defined", "", 780, 799, "Symptoms, signs, and ill-defined conditions"
    ),
    Icd9Chapter("injury_poisoning", "", 800, 999, "Injury and poisoning"),
    Icd9Chapter(
        "supplementary",
        "V",
        1,
        91,
        "Factors influencing health status and contact with health services (V codes)",
    ),
    Icd9Chapter(
        "external_causes", "E", 800, 999, "External causes of injury and poisoning (E codes)"
    ),
)


#: The values of `diag_N_group` (for forms and encoders).
ICD9_GROUPS: tuple[str, ...] = tuple(chapter.group for chapter in ICD9_CHAPTERS)


#: The shapes of ICD-9-CM codes: 1-3 digits (the file drops leading zeros: "38" is 038)
#: with up to 2 decimals, V and 2 digits with up to 2 decimals, E and 3 digits with 1.
_ICD9_CODE = re.compile(
    r"(?P<number>\d{1,3})(?:\.\d{1,2})?|V(?P<v>\d{2})(?:\.\d{1,2})?|E(?P<e>\d{3})(?:\.\d)?"
)


def icd9_chapter(code: str) -> str | None:
    """The group (`ICD9_CHAPTERS`) of one ICD-9-CM code, None if missing or not ICD-9."""
    return diagnosis(code)[1]


def diagnosis_parsed(value: object) -> tuple[tuple[object, object], int]:
    """Rule 10 for one value: ((code, group), flag), NaN for missing and non-ICD-9 codes."""
    code, group = diagnosis(value)
    if code is None:
        return (np.nan, np.nan), VALID
    if group is None:
        return (np.nan, np.nan), INVALID
    return (code, group), VALID


def diagnosis(value: object) -> tuple[str | None, str | None]:
    """A normalised ICD-9-CM code and its group: (None, None) when missing, (text, None)
    when it is not an ICD-9-CM code."""
    text = as_text(value)
    if text is None:
        return None, None
    code = text.upper().removesuffix(".")
    match = _ICD9_CODE.fullmatch(code)
    if match is None:
        return code, None
    if match["number"] is not None:
        prefix, number = "", int(match["number"])
        # one spelling per code: the file drops leading zeros ("38"), ICD-9-CM and clients
        # write three digits ("038"); the 3-digit category must not depend on it
        code = code.zfill(3 + len(code) - len(match["number"]))
    elif match["v"] is not None:
        prefix, number = "V", int(match["v"])
    else:
        prefix, number = "E", int(match["e"])
    for chapter in ICD9_CHAPTERS:
        if chapter.prefix == prefix and chapter.first <= number <= chapter.last:
            return code, chapter.group
    return code, None
