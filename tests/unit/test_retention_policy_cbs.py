"""A set's retention policy in CBS form (``RetentionPolicy``, cbs-api.md §10): shown from the
model, read back into the same model, every wrong input one §3 line naming the key and why;
and the command line's options made into a policy (``opencbs set retention``)."""

from __future__ import annotations

from typing import Any

import click
import pytest

from opencbs.api.cbs_sets import parse_retention_policy, retention_policy
from opencbs.cli.admin import describe_retention, new_retention, retention_rules
from opencbs.errors import InvalidInput, ParameterInvalid, ParameterMissing
from opencbs.model.sets import Retention

ADVANCED = Retention(mode="ADVANCED", keep_last=3, keep_daily=7, keep_within="30d")


def test_the_default_is_seven_days_run_after_each_backup() -> None:
    assert retention_policy(Retention.default()) == {
        "Type": "SIMPLE",
        "RetentionDays": 7,
        "SpaceFreeUpEnabled": True,
    }


@pytest.mark.parametrize(
    ("retention", "shown"),
    [
        (
            Retention(days=30, after_backup=False),
            {"Type": "SIMPLE", "RetentionDays": 30, "SpaceFreeUpEnabled": False},
        ),
        (
            Retention(jobs=10),
            {"Type": "SIMPLE", "RetentionJobs": 10, "SpaceFreeUpEnabled": True},
        ),
        (
            ADVANCED,
            {
                "Type": "ADVANCED",
                "KeepLast": 3,
                "KeepHourly": 0,
                "KeepDaily": 7,
                "KeepWeekly": 0,
                "KeepMonthly": 0,
                "KeepYearly": 0,
                "KeepWithin": "30d",
                "SpaceFreeUpEnabled": True,
            },
        ),
        (
            Retention(mode="ADVANCED", keep_weekly=4),
            {
                "Type": "ADVANCED",
                "KeepLast": 0,
                "KeepHourly": 0,
                "KeepDaily": 0,
                "KeepWeekly": 4,
                "KeepMonthly": 0,
                "KeepYearly": 0,
                "KeepWithin": "",
                "SpaceFreeUpEnabled": True,
            },
        ),
    ],
)
def test_shown_and_read_back(retention: Retention, shown: dict[str, Any]) -> None:
    assert retention_policy(retention) == shown
    assert parse_retention_policy(shown) == retention


def test_lenient_where_clients_differ() -> None:
    # decimal text (a form), integral floats, any case of Type, booleans as §1 reads them
    assert parse_retention_policy(
        {"Type": "simple", "RetentionJobs": "12", "SpaceFreeUpEnabled": "N"}
    ) == Retention(jobs=12, after_backup=False)
    assert parse_retention_policy({"Type": "SIMPLE", "RetentionDays": 5.0}) == Retention(days=5)
    # a SIMPLE policy sent with its zero Keep… rules and a null RetentionJobs
    assert parse_retention_policy(
        {"Type": "SIMPLE", "RetentionDays": 3, "RetentionJobs": None, "KeepLast": 0}
    ) == Retention(days=3)
    # an ADVANCED policy with RetentionDays 0 and KeepWithin ""
    assert parse_retention_policy(
        {"Type": "ADVANCED", "RetentionDays": 0, "KeepDaily": "7", "KeepWithin": ""}
    ) == Retention(mode="ADVANCED", keep_daily=7)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"Type": "SIMPLE", "RetentionDays": 400},
            "Parameter RetentionPolicy.RetentionDays is invalid: \u2018400\u2019 (1 to 365)",
        ),
        (
            {"Type": "SIMPLE", "RetentionJobs": -1},
            "Parameter RetentionPolicy.RetentionJobs is invalid: \u2018-1\u2019 (1 to 365)",
        ),
        (
            {"Type": "SIMPLE", "RetentionDays": "seven"},
            "Parameter RetentionPolicy.RetentionDays is invalid: \u2018seven\u2019 (a whole "
            "number)",
        ),
        (
            {"Type": "SIMPLE", "RetentionDays": True},
            "Parameter RetentionPolicy.RetentionDays is invalid: \u2018true\u2019 (a whole number)",
        ),
        (
            {"Type": "SIMPLE", "RetentionDays": 7.5},
            "Parameter RetentionPolicy.RetentionDays is invalid: \u20187.5\u2019 (a whole number)",
        ),
        ({"Type": "SIMPLE", "RetentionDays": 7, "RetentionJobs": 3}, "(RetentionDays or "),
        ({"Type": "SIMPLE"}, "(a SIMPLE policy keeps RetentionDays or RetentionJobs: 1 to 365)"),
        (
            {"Type": "SIMPLE", "RetentionDays": 7, "KeepDaily": 7},
            "Parameter RetentionPolicy.KeepDaily is invalid: \u20187\u2019 (ADVANCED policies "
            "only)",
        ),
        (
            {"Type": "SIMPLE", "RetentionDays": 7, "KeepWithin": "30d"},
            "Parameter RetentionPolicy.KeepWithin is invalid: \u201830d\u2019 (ADVANCED",
        ),
        (
            {"Type": "ADVANCED", "KeepDaily": 7, "RetentionJobs": 3},
            "Parameter RetentionPolicy.RetentionJobs is invalid: \u20183\u2019 (SIMPLE policies "
            "only)",
        ),
        ({"Type": "ADVANCED"}, "(an ADVANCED policy needs a Keep"),
        ({"Type": "ADVANCED", "KeepLast": 0, "KeepWithin": ""}, "(an ADVANCED policy needs"),
        (
            {"Type": "ADVANCED", "KeepWithin": "30 days"},
            "Parameter RetentionPolicy.KeepWithin is invalid: \u201830 days\u2019 (restic's",
        ),
        (
            {"Type": "ADVANCED", "KeepHourly": 20_000},
            "Parameter RetentionPolicy.KeepHourly is invalid: \u201820000\u2019 (0 to 10000)",
        ),
        (
            {"Type": "WEEKLY"},
            "Parameter RetentionPolicy.Type is invalid: \u2018WEEKLY\u2019 (SIMPLE or ADVANCED)",
        ),
        (
            {"Type": "SIMPLE", "RetentionDays": 7, "SpaceFreeUpEnabled": "sometimes"},
            "Parameter RetentionPolicy.SpaceFreeUpEnabled is invalid: \u2018sometimes\u2019",
        ),
        (
            {"Type": "SIMPLE", "RetentionDays": 7, "Retention": 7},
            "Parameter RetentionPolicy.Retention is invalid: \u20187\u2019 (unknown key; known: "
            "Type, RetentionDays",
        ),
    ],
)
def test_wrong_input_is_one_line_naming_the_key(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterInvalid) as info:
        parse_retention_policy(given)
    assert info.value.message.startswith("[Error] Parameter RetentionPolicy"), info.value.message
    assert message in info.value.message, info.value.message
    assert "\n" not in info.value.message


def test_type_is_required() -> None:
    with pytest.raises(ParameterMissing) as info:
        parse_retention_policy({"RetentionDays": 7})
    assert info.value.message == "[Error] Parameter RetentionPolicy.Type is null / empty!"


# --- the command line's options ------------------------------------------------------------

NO_KEEPS: dict[str, int | None] = dict.fromkeys(
    ("last", "hourly", "daily", "weekly", "monthly", "yearly")
)


DEFAULT = Retention.default()


def _new(current: Retention = DEFAULT, **given: Any) -> Retention | None:
    options: dict[str, Any] = {
        "days": None,
        "jobs": None,
        "keeps": dict(NO_KEEPS),
        "keep_within": None,
        "after_backup": None,
    }
    for key, value in given.items():
        if key.startswith("keep_") and key != "keep_within":
            options["keeps"][key.removeprefix("keep_")] = value
        else:
            options[key] = value
    return new_retention(current, **options)


def test_options_make_a_policy() -> None:
    assert _new() is None  # no option: show only
    assert _new(days=30) == Retention(days=30)
    no_run = Retention(days=7, after_backup=False)
    assert _new(no_run, jobs=5) == Retention(jobs=5, after_backup=False)
    assert _new(ADVANCED, days=2, after_backup=True) == Retention(days=2)
    assert _new(keep_daily=7, keep_within="14d") == Retention(
        mode="ADVANCED", keep_daily=7, keep_within="14d"
    )
    # --after-backup alone keeps the rules
    assert _new(ADVANCED, after_backup=False) == ADVANCED.model_copy(update={"after_backup": False})


def test_options_that_cannot_make_a_policy() -> None:
    with pytest.raises(click.UsageError, match="exclude each other"):
        _new(days=3, keep_last=1)
    with pytest.raises(click.UsageError, match="not both"):
        _new(days=3, jobs=3)
    with pytest.raises(InvalidInput, match="needs a --keep-\\* rule above 0"):
        _new(keep_last=0)
    with pytest.raises(InvalidInput, match="keep_within: invalid duration 'soon'") as info:
        _new(keep_last=1, keep_within="soon")
    assert info.value.hint


def test_a_policy_in_words() -> None:
    assert describe_retention(Retention.default()) == "SIMPLE: keeps 7 days; runs after each backup"
    assert retention_rules(Retention(jobs=4)) == "4 jobs"
    assert (
        describe_retention(ADVANCED.model_copy(update={"after_backup": False}))
        == "ADVANCED: keeps last 3, daily 7, within 30d; runs only when asked"
    )
