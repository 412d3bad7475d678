import json

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/users/not-a-uuid/", "/api/nothing-here/", "/health/x/"])
def test_unknown_api_urls_answer_json_404(client_for, user, path):
    response = client_for(user).get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_unknown_pages_elsewhere_stay_html(client):
    response = client.get("/nowhere/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_server_error_on_the_api_is_json(rf):
    from backend.common.views import server_error

    response = server_error(rf.get("/api/tasks/"))
    assert response.status_code == 500
    assert json.loads(response.content)["code"] == "server_error"
