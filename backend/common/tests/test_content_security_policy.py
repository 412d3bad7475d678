"""The Content-Security-Policy of the HTML pages: sent with every page and no JSON answer, and
every page a person uses (Swagger UI, ReDoc, the admin and its dashboard, the browsable API,
the sign-in form, the front page) runs under it in headless Chromium without one violation,
its scripts working: the browsable API's "Log out" link, the Periodic task form's crontab
help."""

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django_celery_beat.models import CrontabSchedule

from backend.ops.tests.browser import session_cookie
from backend.users.tests.factories import UserFactory

from .chromium import BROWSER, Chromium

# Run in every document before its own scripts: each violation the page meets is kept.
VIOLATIONS = """
window.violations = [];
document.addEventListener('securitypolicyviolation', e => window.violations.push(
    `${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`));
"""

PAGES = {
    "/": "document.readyState === 'complete'",
    "/api/docs/": "document.querySelectorAll('.opblock').length > 10",
    "/api/redoc/": "document.querySelectorAll('[data-section-id]').length > 10",
    "/api/tasks/": "!!document.getElementById('logoutLink')",
    "/api-auth/login/": "!!document.querySelector('input[name=password]')",
    "/admin/": "!!document.querySelector('#content-main')",
    "/admin/dashboard/": "document.querySelectorAll('svg').length > 0",
    "/admin/tasks/task/": "!!document.querySelector('#changelist')",
    "/admin/django_celery_beat/periodictask/add/": "!!document.querySelector('#id_crontab')",
}


@pytest.mark.django_db
def test_an_html_page_carries_the_policy_and_a_json_answer_does_not(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    policy = settings.CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy

    for path in ("/", "/api/docs/", "/api/redoc/", "/admin/", "/api/tasks/"):
        response = client.get(path, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, path
        assert response["Content-Type"].startswith("text/html"), path
        assert response["Content-Security-Policy"] == policy, path

    answer = client.get("/api/tasks/", HTTP_ACCEPT="application/json")
    assert answer.status_code == 200
    assert "Content-Security-Policy" not in answer


def test_djangos_debug_page_of_an_error_keeps_its_scripts(client, settings, monkeypatch):
    """With DEBUG on (make run), the page of a 500 toggles its tracebacks with inline
    scripts, which the policy refused; without DEBUG, the 500 page is the service's own."""
    from django.views.generic import TemplateView

    assert client.get("/", HTTP_ACCEPT="text/html")["Content-Security-Policy"]

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(TemplateView, "get", broken)  # the front page's view
    client.raise_request_exception = False
    settings.DEBUG = True
    page = client.get("/", HTTP_ACCEPT="text/html")
    assert page.status_code == 500 and page["Content-Type"].startswith("text/html")
    assert b"RuntimeError" in page.content and b"<script" in page.content
    assert "Content-Security-Policy" not in page


def staff_browser(live_server) -> tuple[Chromium, dict[str, str]]:
    name, _, value = session_cookie(UserFactory(is_staff=True, is_superuser=True)).partition("=")
    return Chromium(), {name: value}


@pytest.mark.skipif(BROWSER is None, reason="no chromium-headless-shell or chromium here")
@pytest.mark.django_db(transaction=True)
def test_every_page_runs_under_the_policy_without_a_violation(live_server):
    browser, cookies = staff_browser(live_server)
    with browser:
        for path, ready in PAGES.items():
            browser.open(f"{live_server.url}{path}", first=VIOLATIONS, cookies=cookies)
            browser.wait_for(ready, what=f"{path} rendered")
            browser.wait_for("document.readyState === 'complete'", what=f"{path} loaded")
            assert browser.evaluate("location.pathname") == path
            assert browser.evaluate("window.violations") == [], path


@pytest.mark.skipif(BROWSER is None, reason="no chromium-headless-shell or chromium here")
@pytest.mark.django_db(transaction=True)
def test_the_browsable_apis_log_out_link_signs_out(live_server):
    browser, cookies = staff_browser(live_server)
    with browser:
        browser.open(f"{live_server.url}/api/tasks/", first=VIOLATIONS, cookies=cookies)
        browser.wait_for(PAGES["/api/tasks/"], what="the browsable API")
        browser.wait_for("document.readyState === 'complete'", what="its scripts run")
        assert Session.objects.count() == 1

        browser.evaluate("document.getElementById('logoutLink').click() || true")
        # Signed out, back on the page it left (now a 401): the menu offers to log in.
        browser.wait_for(
            "location.pathname === '/api/tasks/' && !document.getElementById('logoutLink')"
            " && !!document.body?.innerText.includes('Log in')",
            what="signed out",
        )
        assert browser.evaluate("window.violations") == []
    assert Session.objects.count() == 0


@pytest.mark.skipif(BROWSER is None, reason="no chromium-headless-shell or chromium here")
@pytest.mark.django_db(transaction=True)
def test_the_periodic_task_forms_crontab_help_says_when_it_fires(live_server):
    crontab = CrontabSchedule.objects.create(minute="30", hour="4", timezone="UTC")
    path = "/admin/django_celery_beat/periodictask/add/"
    browser, cookies = staff_browser(live_server)
    with browser:
        browser.open(f"{live_server.url}{path}", first=VIOLATIONS, cookies=cookies)
        browser.wait_for(PAGES[path], what="the Periodic task form")
        browser.wait_for("document.readyState === 'complete'", what="its scripts run")
        help_text = "document.querySelector('.field-crontab .help').innerText"
        before = browser.evaluate(help_text)
        assert "Translation" not in before

        browser.evaluate(
            f"(() => {{ const s = document.getElementById('id_crontab'); s.value = '{crontab.pk}';"
            " django.jQuery(s).trigger('change'); return true; })()"
        )
        after = browser.wait_for(f"{help_text}.includes('Translation') && {help_text}")
        assert after.startswith(before.strip())
        assert "Translation: At 04:30" in after, after
        assert browser.evaluate("window.violations") == []
