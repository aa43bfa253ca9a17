"""Raw -> clean: the one function that cleans the raw table (Airflow) and a request (API).

`clean` is vectorised: numeric columns go through numpy, the others are factorised so that
the rules run once per distinct value (a 100,000-row batch has a few thousand), and up to
`_FEW_ROWS` rows (an API request) the rules run on each value, skipping the factorising
overhead: ~0.3 s for the whole file, ~1 ms for one row. Rules, each with its reason:

 1. Missing markers `"?"`, empty or blank strings, None, pd.NA and NaN become NaN in every
    column (NA in the Int64 identifiers), strings are stripped: a JSON null must reach
    scikit-learn as NaN, since OneHotEncoder encodes None as all zeros.
 2. Categories match `Column.categories` ignoring case and whitespace and come out in the
    canonical spelling (`" steady "` -> `"Steady"`); anything else is invalid, becomes NaN
    and is counted: one spelling per category is what the encoders saw in training.
 3. `max_glu_serum` and `A1Cresult`: `"None"` is the category "test not taken", never
    missing, and a missing (or invalid) value becomes `"None"`: a client that omits the
    lab result did not take the test.
 4. The 23 medication columns: a missing (or invalid) value becomes `"No"`: a drug a
    client does not mention was not prescribed.
 5. `gender` `"Unknown/Invalid"` becomes NaN (counted as unknown, not invalid): it is the
    file's way of writing a missing gender (3 rows).
 6. Codes (`admission_type_id`, `discharge_disposition_id`, `admission_source_id`) are
    numbers; a code labelled "NULL", "Not Available", "Not Mapped" or "Unknown/Invalid"
    (`schema.UNKNOWN_CODE_LABELS`) becomes NaN and is counted as unknown (a documented
    way of saying unknown), a code absent from `Column.codes` becomes NaN and is counted
    as invalid: several codes meaning "unknown" would otherwise be learnt as categories.
 7. Counts are numbers (`3`, `"3"`, `"3.0"`); fractions, text, booleans, infinities and
    values outside `[Column.minimum, Column.maximum]` become NaN and are counted: a
    count out of its plausible range is an error, not a signal.
 8. Identifiers (`encounter_id`, `patient_nbr`) become nullable Int64 (integers below
    2**53 in magnitude); anything else becomes NA and is counted: they are join keys.
 9. The target `readmitted` is one of `NO`, `>30`, `<30` (case-insensitive, as rule 2);
    anything else becomes NaN, counted only when a value was given: a request carries no
    target, which is not an error.
10. ICD-9-CM codes (`diag_1..3`) are stripped, upper-cased and lose a trailing `"."`; a
    numeric code keeps its decimals as written (`"250.83"`, `"250.0"`) and gets the three
    digits ICD-9-CM writes (`"38"`, the file's form, becomes `"038"`, as a client writes it);
    each gets a `diag_N_group` with its chapter of the ICD-9-CM tabular list, diabetes
    (250.x) split out of endocrine as Strack et al. (2014) did (`ICD9_CHAPTERS`); a code
    that is not ICD-9 becomes NaN (code and group) and is counted: the raw codes have
    ~700 values, too many for most encoders, the chapters 19 (plus diabetes).
11. Derived `age_years` is the midpoint of the age bracket (`"[70-80)"` -> 75.0), NaN if
    missing: lets a model use age as a number.
12. Derived `expired` is True when the raw `discharge_disposition_id` (before rule 6) is
    in `schema.EXPIRED_DISPOSITIONS` (the patient died): such encounters cannot be
    readmitted, and training decides what to do with them. Hospice (13, 14) is not death.
13. Idempotent: `clean(clean(x))` equals `clean(x)`: the output keys are accepted
    aliases, derived columns are recomputed, and rules 3 and 4 give invalid values the
    default so that a second pass does not change them again.

Input columns may use any spelling of `schema.key_aliases()`; schema columns absent from
the input are added as missing (then rules 3 and 4 apply); other columns pass through
unchanged after the clean ones. The input frame is never modified; its index is kept."""

from __future__ import annotations

from readmission.cleaning.columns import (
    AGE_MIDPOINTS,
    AGE_YEARS,
    CLEAN_COLUMNS,
    CLEAN_KEYS,
    DIAGNOSIS_GROUPS,
    EXPIRED,
    CleanColumn,
    SqlType,
)
from readmission.cleaning.icd9 import ICD9_CHAPTERS, ICD9_GROUPS, Icd9Chapter, icd9_chapter
from readmission.cleaning.rules import (
    RULES_VERSION,
    CleaningReport,
    clean,
    clean_records,
    clean_with_report,
    map_icd9_chapters,
)

__all__ = [
    "AGE_MIDPOINTS",
    "AGE_YEARS",
    "CLEAN_COLUMNS",
    "CLEAN_KEYS",
    "DIAGNOSIS_GROUPS",
    "EXPIRED",
    "ICD9_CHAPTERS",
    "ICD9_GROUPS",
    "RULES_VERSION",
    "CleanColumn",
    "CleaningReport",
    "Icd9Chapter",
    "SqlType",
    "clean",
    "clean_records",
    "clean_with_report",
    "icd9_chapter",
    "map_icd9_chapters",
]
