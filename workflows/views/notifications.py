"""The user's own e-mail choices (issue 8). There is no user id in the URL: everyone edits
their own preferences and nobody else's."""
from django import forms
from django.contrib import messages
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods

from .. import notifications
from ..models import NotificationKind
from .common import render_page


class NotificationPreferenceForm(forms.Form):
    """One checkbox per kind of e-mail the user's roles can receive."""

    def __init__(self, *args, kinds, **kwargs):
        super().__init__(*args, **kwargs)
        for kind in kinds:
            self.fields[kind.value] = forms.BooleanField(label=NotificationKind(kind).label, required=False)


@require_http_methods(["GET", "HEAD", "POST"])
def notification_preferences(request):
    kinds = notifications.kinds_for(request.user)
    preference = notifications.preference_for(request.user)
    initial = {kind.value: preference.wants(kind) for kind in kinds}
    form = NotificationPreferenceForm(request.POST if request.method == "POST" else None, kinds=kinds, initial=initial)
    if request.method == "POST":
        if not form.is_valid():  # checkboxes accept any value; kept for a future field that may not
            return render_page(request, "workflows/notification_preferences.html", {"form": form, "kinds": kinds},
                               status=422)
        notifications.preferences_set(user=request.user, choices=form.cleaned_data)
        messages.success(request, "Your e-mail choices are saved.")
        return redirect("notification_preferences")
    return render_page(request, "workflows/notification_preferences.html", {"form": form, "kinds": kinds})
