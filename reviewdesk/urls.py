from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path

from workflows.views.accounts import LoginView

from .metrics import metrics

urlpatterns = [
    path("accounts/login/", LoginView.as_view(), name="login"),
    # Logging out must work without a session too: an expired session's logout button would
    # otherwise go to the login page and come back to a GET of this POST-only view.
    path("accounts/logout/", login_not_required(auth_views.LogoutView.as_view()), name="logout"),
    path("admin/", admin.site.urls),
    path("calibration/", include("calibration.urls")),
    path("evals/", include("evals.urls")),
    # Prometheus (issue 9): bearer token in production, see reviewdesk/metrics.py.
    path("metrics", metrics, name="metrics"),
    path("costs/", include("costs.urls")),
    path("", include("workflows.urls")),
]
