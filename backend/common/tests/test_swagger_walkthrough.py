"""The first walkthrough a newcomer follows, done in Swagger UI in headless Chromium against
a live server and a real worker: register, log in, Authorize with the access token, execute
the `sum` example of creating a task as it stands, and see the task completed."""

import json
import time

import pytest

from backend.tasks.tests.processes import Cluster, purge_filesystem_broker

from .chromium import BROWSER, Chromium

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(BROWSER is None, reason="no chromium-headless-shell or chromium here"),
]

# Operations are found the way a person finds them: by method and path.
HELPERS = r"""
window.op = (method, path) => Array.from(document.querySelectorAll('.opblock')).find(b =>
    b.querySelector('.opblock-summary-path')?.getAttribute('data-path') === path &&
    b.querySelector('.opblock-summary-method')?.textContent === method);
window.type = (element, text) => {
    const proto = Object.getPrototypeOf(element);
    Object.getOwnPropertyDescriptor(proto, 'value').set.call(element, text);
    element.dispatchEvent(new Event('input', {bubbles: true}));
    element.dispatchEvent(new Event('change', {bubbles: true}));
};
window.openTry = (method, path) => {
    const block = op(method, path);
    if (!block.classList.contains('is-open')) {
        block.querySelector('.opblock-summary-control').click();
    }
    return block;
};
window.response = (method, path) => {
    const block = op(method, path);
    const status = block.querySelector('.live-responses-table tr.response .response-col_status');
    const body = block.querySelector('.live-responses-table tr.response .response-col_description pre');
    return status && body ? {status: status.textContent.trim(), body: body.textContent} : null;
};
true
"""


def try_it_out(browser, method, path):
    browser.evaluate(f"openTry({method!r}, {path!r}) && true")
    browser.wait_for(
        f"!!op({method!r}, {path!r}).querySelector('.try-out__btn')", what=f"{method} {path}"
    )
    browser.evaluate(
        f"""(() => {{ const b = op({method!r}, {path!r}).querySelector('.try-out__btn');
        if (b.textContent.trim() === 'Try it out') b.click(); return true; }})()"""
    )
    browser.wait_for(f"!!op({method!r}, {path!r}).querySelector('.execute')", what="Execute")


def execute(browser, method, path):
    time.sleep(1)  # what was just typed reaches Swagger UI's state (inputs are debounced)
    browser.evaluate(f"op({method!r}, {path!r}).querySelector('.execute').click() || true")
    try:
        answer = browser.wait_for(f"response({method!r}, {path!r})", what=f"{method} {path} answer")
    except AssertionError:  # what the page shows instead, e.g. a validation message
        print(browser.evaluate(f"op({method!r}, {path!r}).innerText.slice(0, 3000)"))
        raise
    return int(answer["status"]), json.loads(answer["body"])


def test_register_login_authorize_and_run_the_sum_example(live_server, tmp_path):
    purge_filesystem_broker()
    cluster = Cluster(tmp_path)
    cluster.start_worker()
    browser = Chromium()
    try:
        browser.open(f"{live_server.url}/docs")  # the seed's address: it leads to Swagger UI
        browser.wait_for("document.querySelectorAll('.opblock').length > 10", what="Swagger UI")
        browser.evaluate(HELPERS)

        # Register.
        try_it_out(browser, "POST", "/api/register/")
        body = {"email": "myemail@test.com", "username": "myname", "password": "mypassword123"}
        browser.evaluate(
            f"type(op('POST', '/api/register/').querySelector('textarea.body-param__text'), "
            f"{json.dumps(json.dumps(body))}) || true"
        )
        status, created = execute(browser, "POST", "/api/register/")
        assert status == 201, created

        # Log in with the email, as the seed does.
        try_it_out(browser, "POST", "/api/token/")
        login = {"username": "myemail@test.com", "password": "mypassword123"}
        browser.evaluate(
            f"type(op('POST', '/api/token/').querySelector('textarea.body-param__text'), "
            f"{json.dumps(json.dumps(login))}) || true"
        )
        status, tokens = execute(browser, "POST", "/api/token/")
        assert status == 200, tokens

        # Authorize: the dialog's first (only) scheme takes the access token.
        browser.evaluate("document.querySelector('.auth-wrapper .authorize').click() || true")
        field = "document.querySelector('.modal-ux .auth-container input')"
        browser.wait_for(f"!!{field}", what="the Authorize dialog")
        browser.evaluate(f"type({field}, {json.dumps(tokens['access'])}) || true")
        browser.evaluate(
            "document.querySelector('.modal-ux .auth-btn-wrapper .authorize').click() || true"
        )
        browser.wait_for(
            "Array.from(document.querySelectorAll('.modal-ux button'))"
            ".some(b => b.textContent.trim() === 'Logout')",
            what="authorized",
        )
        browser.evaluate("document.querySelector('.modal-ux .btn-done').click() || true")

        # Create a task from the example shown first, as it stands.
        try_it_out(browser, "POST", "/api/tasks/")
        example = browser.evaluate(
            "op('POST', '/api/tasks/').querySelector('textarea.body-param__text').value"
        )
        assert json.loads(example)["task_type"] == "sum", example
        status, task = execute(browser, "POST", "/api/tasks/")
        assert status == 201, task

        # Watch it: execute the detail request until the worker has completed it.
        path = "/api/tasks/{id}/"
        try_it_out(browser, "GET", path)
        browser.evaluate(
            f"type(op('GET', {path!r}).querySelector('tr[data-param-name=\"id\"] input'), "
            f"{json.dumps(task['id'])}) || true"
        )
        for _ in range(40):
            status, seen = execute(browser, "GET", path)
            assert status == 200, seen
            if seen["status"] == "completed":
                break
            time.sleep(0.5)
            browser.evaluate(f"op('GET', {path!r}).querySelector('.btn-clear').click() || true")
            browser.wait_for(f"!response('GET', {path!r})", what="the answer cleared")
        assert seen["status"] == "completed", seen
        assert seen["result"] is not None
    finally:
        browser.close()
        cluster.stop()
