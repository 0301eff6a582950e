"""Checks across settings: refused at start, with a message naming the settings involved."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.core.settings import ApiSettings
from common.settings import settings_problems


@pytest.mark.parametrize(("kept", "refused"), [("6h", True), ("7h", False), ("INF", False)])
def test_change_marks_outlive_the_api_s_full_reload(kept: str, refused: bool) -> None:
    # The default full reload is every 6 hours: an owed mark expiring before it would make a
    # stale "rows whole" point look valid again (api.live.rows).
    if not refused:
        assert ApiSettings(retention_changes=kept).retention_changes == kept
        return
    with pytest.raises(ValidationError) as info:
        ApiSettings(retention_changes=kept)
    assert settings_problems(info.value) == (
        "  CITYSENSE_RETENTION_CHANGES (6h) must be longer than "
        "CITYSENSE_API_STATE_FULL_RELOAD_INTERVAL (21600 s)"
    )


def test_a_single_setting_s_problem_names_its_variable() -> None:
    with pytest.raises(ValidationError) as info:
        ApiSettings(api_port=-1)
    assert settings_problems(info.value).startswith("  CITYSENSE_API_PORT: ")
