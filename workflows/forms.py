"""Guided forms built from a workflow definition, one Django form per step.

Values are kept between steps in the session as JSON-safe primitives, so a failed step or a
page reload loses nothing already entered.
"""
from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator

from .definitions import FieldDef, StepDef
from .models import RejectReason

TOO_LONG_MESSAGE = (
    "This answer is %(show_value)s characters long; the most it can take is %(limit_value)s. "
    "Nothing was cut: please shorten it and send it again."
)


class _ReadableMaxLengthValidator(MaxLengthValidator):
    """Django's length check, with both numbers written with thousands separators (12,000):
    a submitter reads "12000 characters" as a code more than a length. The same format as the
    counter of static/js/submit.js, which shows the number while they type. (Not humanize's
    intcomma: django.contrib.humanize is not an installed app, and this needs no locale.)"""

    def __call__(self, value):
        length = self.clean(value)
        if self.compare(length, self.limit_value):
            raise ValidationError(self.message, code=self.code, params={
                "limit_value": f"{self.limit_value:,}", "show_value": f"{length:,}", "value": value})


class _UncutLengthMixin:
    """A text field whose limit is told, not enforced by cutting.

    Django writes ``maxlength`` on the input, and browsers then cut a longer paste silently:
    the submitter never learns that the end of their text is gone. The limit goes into
    ``data-maxlength`` instead, which static/js/submit.js reads to warn as they paste or type,
    and the form refuses an over-long answer with TOO_LONG_MESSAGE.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("error_messages", {}).setdefault("max_length", TOO_LONG_MESSAGE)
        super().__init__(*args, **kwargs)
        self.validators = [_ReadableMaxLengthValidator(v.limit_value) if type(v) is MaxLengthValidator else v
                           for v in self.validators]

    def widget_attrs(self, widget):
        attrs = super().widget_attrs(widget)
        limit = attrs.pop("maxlength", None)
        if limit is not None:
            attrs["data-maxlength"] = limit
        return attrs


class UncutCharField(_UncutLengthMixin, forms.CharField):
    pass


class UncutEmailField(_UncutLengthMixin, forms.EmailField):
    pass


def _form_field(field: FieldDef) -> forms.Field:
    common = {"label": field.label, "required": field.required, "help_text": field.help}
    if field.type == "text":
        return UncutCharField(max_length=field.max_length or 1000, **common)
    if field.type == "textarea":
        return UncutCharField(max_length=field.max_length or 20000, widget=forms.Textarea(attrs={"rows": 6}), **common)
    if field.type == "email":
        return UncutEmailField(max_length=field.max_length or 254, **common)
    if field.type == "choice":
        choices = [("", "— choose —")] + [(c, c) for c in field.choices]
        return forms.ChoiceField(choices=choices, **common)
    if field.type == "multichoice":
        return forms.MultipleChoiceField(
            choices=[(c, c) for c in field.choices], widget=forms.CheckboxSelectMultiple, **common
        )
    if field.type == "integer":
        return forms.IntegerField(
            min_value=int(field.min) if field.min is not None else None,
            max_value=int(field.max) if field.max is not None else None,
            **common,
        )
    if field.type == "decimal":
        return forms.DecimalField(min_value=field.min, max_value=field.max, max_digits=18, decimal_places=4, **common)
    if field.type == "date":
        return forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), **common)
    if field.type == "boolean":
        # A required boolean means "must be ticked"; Django's BooleanField does exactly that.
        return forms.BooleanField(**common)
    raise ValueError(f"unknown field type {field.type}")


def step_form_class(step: StepDef) -> type[forms.Form]:
    attrs = {field.name: _form_field(field) for field in step.fields}
    return type("StepForm", (forms.Form,), attrs)


def to_json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def cleaned_to_json(cleaned: dict[str, Any]) -> dict[str, Any]:
    return {name: to_json_value(value) for name, value in cleaned.items()}


class AuditFilterForm(forms.Form):
    # As long as AuditEvent.action may be; CharField also refuses NUL characters, which
    # PostgreSQL cannot even compare with.
    action = forms.CharField(required=False, max_length=64)


class ApproveForm(forms.Form):
    # strip=False: whitespace the reviewer did not touch must not count as an edit.
    edited_output = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 12}),
        label="Final text (edit before approving if needed)",
    )


class RejectForm(forms.Form):
    reason_code = forms.ChoiceField(choices=[("", "— reason —")] + list(RejectReason.choices), label="Reason")
    reason_text = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), label="Explanation", max_length=4000)


class RegenerateForm(forms.Form):
    feedback = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), label="Feedback for the next draft", max_length=4000
    )
