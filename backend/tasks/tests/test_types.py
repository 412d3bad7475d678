"""Input validation of each task type, and what each handler returns."""

import pytest

from backend.tasks import types
from backend.tasks.types.text import MAX_TEXT_BYTES


def validate(task_type: str, data):
    serializer = types.get(task_type).input_serializer(data=data)
    return serializer.is_valid(), serializer.errors, getattr(serializer, "validated_data", None)


def run(task_type: str, data: dict, reports: list | None = None):
    reports = [] if reports is None else reports

    def report(percent):
        reports.append(percent)
        return True

    return types.get(task_type).handler(data, types.JobContext(report))


def test_registry_lists_every_type():
    assert types.names() == [
        "api_integration",
        "count_letters",
        "count_words",
        "countdown",
        "data_processing",
        "email",
        "lowercase",
        "manual",
        "reminder",
        "report_generation",
        "reverse",
        "sum",
        "uppercase",
    ]
    assert "manual" not in types.worker_type_names()
    assert not types.get("manual").runs_on_worker


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError):
        types.register(types.get("sum"))


@pytest.mark.parametrize(
    "numbers",
    [[], [True], [1, False], ["1"], [None], [[1]], "1,2", 5, [1] * 10_001],
)
def test_sum_rejects_what_is_not_a_list_of_numbers(numbers):
    ok, errors, _ = validate("sum", {"numbers": numbers})
    assert not ok and "numbers" in errors


def test_sum_accepts_ints_and_floats_and_adds_them():
    ok, _, data = validate("sum", {"numbers": [1, 2.5, -3]})
    assert ok
    assert run("sum", data) == {"result": 0.5}
    assert run("sum", {"numbers": [1, 2, 3]}) == {"result": 6}
    assert validate("sum", {"numbers": [1] * 10_000})[0]


def test_sum_takes_a_number_of_1e16_or_more_as_the_integer_it_is():
    """PostgreSQL's jsonb gives 1e16 back as 10000000000000000: a run from the message
    summed floats (1e16 + 1 = 1e16) and a run from the database integers (…001)."""
    ok, _, data = validate("sum", {"numbers": [1e16, 1, -2.5e17, 0.5, 1e-20]})
    assert ok
    assert data["numbers"] == [10**16, 1, -25 * 10**16, 0.5, 1e-20]
    assert [type(n) for n in data["numbers"]] == [int, int, int, float, float]
    ok, _, data = validate("sum", {"numbers": [1e16, 1]})
    assert run("sum", data) == {"result": 10**16 + 1}
    ok, _, data = validate("sum", {"numbers": [1e23, 1]})
    assert run("sum", data) == {"result": 10**23 + 1}  # 1e23 as written, as jsonb reads it
    ok, _, data = validate("sum", {"numbers": [1e308, 1e307]})
    assert run("sum", data) == {"result": 11 * 10**307}  # exact, as read from the database


def test_sum_that_overflows_is_refused_and_fails_readably():
    """As floats or as the integers they are read as, a sum past the largest double is
    refused when the task is created (it was accepted for a run that could only fail, its
    traceback in the worker's log); a row written otherwise fails readably: the exact
    integer (2 * 10**308) was a result that a client reading JSON numbers as doubles took
    for Infinity."""
    for numbers in ([1e308, 1e308], [-(10**308), -(10**308)], [1.7e308, 0.5e308]):
        ok, errors, _ = validate("sum", {"numbers": numbers})
        assert not ok and errors["numbers"] == [
            "The sum of these numbers is too large to represent (past about 1.8e308)."
        ], numbers
    assert validate("sum", {"numbers": [1.7e308, 1e308, -1e308]})[0]  # exact: 1.7e308
    with pytest.raises(ValueError, match="too large"):
        run("sum", {"numbers": [1e308, 1e308]})
    with pytest.raises(ValueError, match="too large"):
        run("sum", {"numbers": [10**308, 10**308]})
    with pytest.raises(ValueError, match="too large"):
        run("sum", {"numbers": [-(10**308), -(10**308)]})
    assert isinstance(types.get("sum").expected_errors, tuple)
    with pytest.raises(types.get("sum").expected_errors):  # one line in the worker's log
        run("sum", {"numbers": [1e308, 1e308]})


def test_unknown_and_missing_fields_are_reported():
    ok, errors, _ = validate("sum", {"numbers": [1], "number": 2})
    assert not ok and errors == {"number": ["Unknown field."]}
    ok, errors, _ = validate("sum", {})
    assert not ok and "numbers" in errors


@pytest.mark.parametrize("seconds", [0, -1, True, 1.5, "3", None, 3601, 3601.0, 2.0**60])
def test_countdown_bounds_and_types(seconds):
    ok, errors, _ = validate("countdown", {"seconds": seconds})
    assert not ok and "seconds" in errors


@pytest.mark.parametrize("seconds", [1e300, 9007199254740994.0])
def test_a_whole_float_past_exact_integers_is_refused_as_over_the_maximum(seconds):
    """It was refused as "not a string, a boolean or a fraction", which it is not."""
    ok, errors, _ = validate("countdown", {"seconds": seconds})
    assert not ok and "less than or equal to 3600" in str(errors["seconds"][0])


def test_countdown_maximum_follows_the_setting(settings):
    assert validate("countdown", {"seconds": 3600})[0]
    settings.COUNTDOWN_MAX_SECONDS = 10
    assert validate("countdown", {"seconds": 10})[0]
    ok, errors, _ = validate("countdown", {"seconds": 11})
    assert not ok and "10" in str(errors["seconds"][0])
    assert types.get("countdown").input_schema()["properties"]["seconds"]["maximum"] == 10


def test_countdown_reports_progress_each_second(monkeypatch):
    monkeypatch.setattr("backend.tasks.types.arithmetic.time.sleep", lambda seconds: None)
    reports = []
    assert run("countdown", {"seconds": 4}, reports) == {
        "message": "Countdown finished",
        "seconds": 4,
    }
    assert reports == [25, 50, 75, 100]


def test_countdown_stops_when_the_task_stops_running(monkeypatch):
    monkeypatch.setattr("backend.tasks.types.arithmetic.time.sleep", lambda seconds: None)
    calls = []

    def report(percent):
        calls.append(percent)
        return len(calls) < 2

    with pytest.raises(types.TaskInterrupted):
        types.get("countdown").handler({"seconds": 10}, types.JobContext(report))
    assert calls == [10, 20]


@pytest.mark.parametrize(
    ("task_type", "text", "expected"),
    [
        ("reverse", "abc déf", "féd cba"),
        ("uppercase", "Straße", "STRASSE"),
        ("lowercase", "ÀBC", "àbc"),
        ("count_words", "  two\twords\n", 2),
        ("count_words", "", 0),
        ("count_letters", "a1 b2-ç!", 3),
    ],
)
def test_text_operations(task_type, text, expected):
    ok, _, data = validate(task_type, {"data": text})
    assert ok
    assert run(task_type, data) == {"result": expected}


@pytest.mark.parametrize("data", [1, None, ["a"], {"a": 1}, True])
def test_text_must_be_a_string(data):
    ok, errors, _ = validate("reverse", {"data": data})
    assert not ok and "data" in errors


def test_text_size_is_limited_in_bytes():
    assert validate("reverse", {"data": "a" * MAX_TEXT_BYTES})[0]
    ok, errors, _ = validate("reverse", {"data": "a" * (MAX_TEXT_BYTES + 1)})
    assert not ok and "bytes" in str(errors["data"][0])
    # Two bytes per character in UTF-8: half as many characters fit.
    ok, _, _ = validate("reverse", {"data": "é" * (MAX_TEXT_BYTES // 2 + 1)})
    assert not ok


def test_manual_takes_no_input():
    assert validate("manual", {})[0]
    ok, errors, _ = validate("manual", {"anything": 1})
    assert not ok and "anything" in errors


def test_input_must_be_an_object():
    ok, errors, _ = validate("sum", [1, 2])
    assert not ok and errors


def test_input_schemas():
    schema = types.get("sum").input_schema()
    assert schema == {
        "type": "object",
        "properties": {
            "numbers": {
                "type": "array",
                "items": {"type": "number"},
                "maxItems": 10_000,
                "minItems": 1,
                "description": "1 to 10000 numbers (booleans are not numbers) whose sum a "
                "double holds (at most about 1.8e308 either way)",
            }
        },
        "required": ["numbers"],
        "additionalProperties": False,
    }
    countdown = types.get("countdown").input_schema()["properties"]["seconds"]
    assert countdown["type"] == "integer" and countdown["minimum"] == 1
    assert types.get("reverse").input_schema()["properties"]["data"]["type"] == "string"
    assert types.get("manual").input_schema()["properties"] == {}


def test_time_limits():
    assert types.get("countdown").time_limit_for({"seconds": 100}) == 130
    assert types.get("sum").time_limit_for({"numbers": [1]}) == 30
