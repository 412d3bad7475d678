from django.contrib import admin

# The admin index links to the operations dashboard (templates/admin/ops/index.html).
admin.site.index_template = "admin/ops/index.html"
