// The browsable API's "Log out" link (backend/common/templates/rest_framework/api.html) posts
// the logout form: the Content-Security-Policy (backend/common/middleware.py) runs no inline
// script, so the click is handled here.
(function () {
  var link = document.getElementById("logoutLink");
  var form = document.getElementById("logoutForm");
  if (link && form) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      form.submit();
    });
  }
})();
