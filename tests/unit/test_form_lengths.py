"""The guided form's over-length refusal (workflows/forms.py TOO_LONG_MESSAGE): never cut, and
both numbers written as a person reads them (12,000), as static/js/submit.js's counter does."""
import pytest
from django import forms

from workflows.forms import UncutCharField, UncutEmailField


def _refusal(field: forms.Field, value: str) -> list[str]:
    with pytest.raises(forms.ValidationError) as refused:
        field.clean(value)
    return refused.value.messages


def test_a_long_answer_is_refused_with_thousands_separators():
    field = UncutCharField(max_length=12000, widget=forms.Textarea)
    assert _refusal(field, "x" * 12345) == [
        "This answer is 12,345 characters long; the most it can take is 12,000. "
        "Nothing was cut: please shorten it and send it again."
    ]
    assert field.clean("x" * 12000) == "x" * 12000  # the limit itself is allowed
    assert field.widget_attrs(field.widget)["data-maxlength"] == "12000"  # read by submit.js as a number
    assert "maxlength" not in field.widget_attrs(field.widget)


def test_short_limits_read_as_before_and_other_checks_keep_their_own_messages():
    assert _refusal(UncutCharField(max_length=200), "x" * 201) == [
        "This answer is 201 characters long; the most it can take is 200. "
        "Nothing was cut: please shorten it and send it again."
    ]
    email = UncutEmailField(max_length=1000)
    long_address = "a" * 995 + "@example.org"
    messages = _refusal(email, long_address)
    assert "This answer is 1,007 characters long; the most it can take is 1,000." in messages[-1]
    # Only the length check is replaced: a short bad address is refused as Django refuses it.
    assert _refusal(email, "not-an-address") == ["Enter a valid email address."]
    # A field given its own length message keeps it (the mixin only sets a default).
    own = UncutCharField(max_length=5, error_messages={"max_length": "At most %(limit_value)s."})
    assert _refusal(own, "x" * 6) == ["At most 5."]
