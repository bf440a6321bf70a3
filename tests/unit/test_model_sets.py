"""The one backup-set settings model (``opencbs.model.sets``) and the text rule it applies
(``opencbs.model.text``): defaults, partial updates, and one-line ``InvalidInput`` messages
naming the key."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from opencbs.errors import InvalidInput
from opencbs.model.sets import DEFAULT_COMPRESSION_LEVEL, DEFAULT_RETENTION_DAYS, BackupSetSettings
from opencbs.model.text import SOURCE_HINT, is_text, require_text, shown_text


def test_defaults_and_the_stored_json_form() -> None:
    assert BackupSetSettings.parse({}).as_json() == {
        "sources": [],
        "filters": {"include": [], "exclude": []},
        "compression": {"type": "ZSTD", "level": DEFAULT_COMPRESSION_LEVEL},
        "deduplication": True,
        "retention": {
            "mode": "SIMPLE",
            "days": DEFAULT_RETENTION_DAYS,
            "jobs": None,
            "keep_last": 0,
            "keep_hourly": 0,
            "keep_daily": 0,
            "keep_weekly": 0,
            "keep_monthly": 0,
            "keep_yearly": 0,
            "keep_within": None,
            "after_backup": True,
        },
        "time_zone": None,
    }
    assert DEFAULT_COMPRESSION_LEVEL == 3 and DEFAULT_RETENTION_DAYS == 7


def test_a_partial_update_replaces_only_the_keys_given() -> None:
    current = BackupSetSettings.parse({"sources": ["/a"], "filters": {"exclude": ["*.tmp"]}})
    change = BackupSetSettings.model_validate({"compression": {"level": 9}})
    assert change.given() == {"compression": {"type": "ZSTD", "level": 9}}
    merged = current.merged(change.given())
    assert merged.sources == ("/a",) and merged.filters.exclude == ("*.tmp",)
    assert merged.compression.level == 9 and merged.deduplication is True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nope": 1}, "unknown backup set setting 'nope'"),
        ({"sources": "/a"}, "sources must be a list of paths"),
        ({"sources": [""]}, "sources must be a list of paths (sources.0:"),
        ({"filters": {"include": [1]}}, "filters must be"),
        ({"filters": {"other": []}}, "filters must be"),
        ({"compression": {"level": 23}}, "compression must be"),
        ({"compression": {"level": True}}, "compression must be"),
        ({"compression": {"type": "LZ4"}}, "compression must be"),
        ({"deduplication": 1}, "deduplication must be true or false"),
        ({"retention": {"days": 0}}, "retention must be"),
    ],
)
def test_a_wrong_shape_is_one_line_naming_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        BackupSetSettings.parse(data)
    assert info.value.message.startswith(message), info.value.message
    assert "\n" not in info.value.message


def test_text_that_is_not_utf8_is_invalid_input_with_a_hint_also_under_pydantic() -> None:
    for parse in (BackupSetSettings.parse, BackupSetSettings.model_validate):
        with pytest.raises(InvalidInput) as info:
            parse({"sources": ["/ok", "/bad\udcff"]})
        assert info.value.message == "source /bad\\xff is not valid UTF-8 text"
        assert info.value.hint == SOURCE_HINT
        with pytest.raises(InvalidInput, match="exclude pattern a\\\\x00 holds a NUL"):
            parse({"filters": {"exclude": ["a\x00"]}})
    with pytest.raises(ValidationError):  # other shapes stay pydantic's (the API's 422)
        BackupSetSettings.model_validate({"sources": [""]})


def test_the_text_rule() -> None:
    assert is_text("/home/ä") and not is_text("/a\x00") and not is_text("/a\udcff")
    assert shown_text("/a\\b\udcff") == "/a\\\\b\\xff"
    assert shown_text("/a\ud800\x00") == "/a\\ud800\\x00"
    require_text("/ok", "source")
    with pytest.raises(InvalidInput, match="name x\\\\x00 holds a NUL character"):
        require_text("x\x00", "name", "hint")
