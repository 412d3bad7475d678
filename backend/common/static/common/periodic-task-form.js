// The Periodic task form (backend/common/templates/admin/djcelery/change_periodictask_form.html):
// the crontab's help says in words when the chosen crontab fires, as django-celery-beat's own
// inline script does.
(function ($) {
  var data = document.getElementById("readable-crontabs");
  var readable = data ? JSON.parse(data.textContent) : {};
  var help = $(".field-crontab .help");
  var original = help.html();
  $(".field-crontab_translation").hide();
  $(".field-crontab").change(function () {
    var words = readable[$("#id_crontab").val()];
    help.html(original);
    if (words) {
      help.append($("<br>"), document.createTextNode("Translation: " + words));
    }
  });
})(django.jQuery);
