"""A filter value that is not one of the choices is answered with the choices."""

import pytest

pytestmark = pytest.mark.django_db


def test_a_wrong_status_lists_the_statuses(client_for, user):
    response = client_for(user).get("/api/tasks/?status=in_progress")

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["status"] == [
        "in_progress is not one of the available choices: "
        "scheduled, pending, running, completed, failed, cancelled."
    ]


def test_a_wrong_type_lists_the_registered_types(client_for, user):
    response = client_for(user).get("/api/tasks/?task_type=sum,cleanup")

    assert response.status_code == 400
    message = response.json()["task_type"][0]
    assert message.startswith("cleanup is not one of the available choices: ")
    assert "countdown" in message and "sum" in message


def test_a_nul_in_search_is_a_400_naming_search(client_for, user):
    response = client_for(user).get("/api/tasks/?search=%00")
    assert response.status_code == 400
    assert response.json()["search"] == ["Null characters are not allowed."]


@pytest.mark.parametrize("query", ["status=,", "status=%20,", "status=&status=,"])
def test_a_list_of_blanks_is_no_filter(client_for, user, query):
    """status=, answered an empty list: every task was filtered out by an empty set."""
    from backend.tasks.tests.factories import TaskFactory

    TaskFactory.create_batch(2, owner=user)
    response = client_for(user).get(f"/api/tasks/?{query}")
    assert response.status_code == 200
    assert response.json()["count"] == 2


def test_blank_items_are_dropped(client_for, user):
    from backend.tasks.tests.factories import TaskFactory

    TaskFactory(owner=user, status="pending")
    TaskFactory(owner=user, status="failed")
    response = client_for(user).get("/api/tasks/?status=pending,,failed,")
    assert response.json()["count"] == 2


@pytest.mark.parametrize(
    "query",
    [
        "status=completed&status=",
        "status=completed&status=&ordering=status",
        "status=&status=completed",
        "priority=high&priority=",
    ],
)
def test_a_repeated_filter_with_a_blank_value_keeps_the_others(client_for, user, query):
    """The list decided whether a filter was given from the parameter's last value only: a
    blank last one skipped the filters (every task listed), or with ordering counted the
    tasks unfiltered while the page was filtered (count 1, results [])."""
    from backend.tasks.tests.factories import TaskFactory

    TaskFactory(owner=user, status="pending", priority="low")
    TaskFactory(owner=user, status="completed", priority="high")
    body = client_for(user).get(f"/api/tasks/?{query}").json()
    assert body["count"] == len(body["results"]) == 1
    [task] = body["results"]
    assert task["status"] == "completed" and task["priority"] == "high"


def test_a_nul_in_the_files_search_names_search_too(client_for, user):
    response = client_for(user).get("/api/files/?search=%00")
    assert response.status_code == 400
    assert response.json()["search"] == ["Null characters are not allowed."]


@pytest.mark.parametrize("path", ["/api/tasks/", "/api/files/"])
def test_a_search_of_too_many_words_is_a_400_naming_search(client_for, user, path):
    """Each word is a condition on each searched field: a thousand made a query SQLite
    would not build, answered 503, "the database is unavailable"."""
    from backend.tasks.tests.factories import TaskFactory

    TaskFactory(owner=user, name="alpha beta")
    client = client_for(user)
    words = " ".join(f"w{number}" for number in range(1000))
    response = client.get(path, {"search": words})
    assert response.status_code == 400
    assert response.json()["search"] == ["A search has at most 20 words; this one has 1000."]
    # Twenty, and a word given twice is one.
    twenty = " ".join(["alpha"] * 5 + [f"w{number}" for number in range(19)])
    assert client.get(path, {"search": twenty}).status_code == 200
    if path == "/api/tasks/":
        assert client.get(path, {"search": "alpha alpha beta"}).json()["count"] == 1
