"""Log in with Django's view; only the answer to a failed attempt differs."""
from django.contrib.auth import views as auth_views


class LoginView(auth_views.LoginView):
    def form_invalid(self, form):
        # A failed log-in is bad input like any other form error here: a 4xx (422, which htmx
        # swaps) rather than Django's 200, so clients and access logs can tell it from a page view.
        response = super().form_invalid(form)
        response.status_code = 422
        return response
