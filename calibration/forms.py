from decimal import Decimal

from django import forms


class CalibrationForm(forms.Form):
    """The admin's question: which version, and what escape rate is acceptable."""

    version = forms.TypedChoiceField(coerce=int, required=False)
    alpha = forms.DecimalField(
        label="Target escape rate (%)", min_value=Decimal("0.1"), max_value=Decimal("50"), decimal_places=2,
        required=False, initial=Decimal("2"),
        help_text="The share of auto-approved drafts a reviewer would have changed materially that you accept.",
    )

    def __init__(self, data, *, versions):
        super().__init__(data)
        self.fields["version"].choices = [(v.number, f"v{v.number}") for v in versions]


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=2000, strip=True,
                             error_messages={"required": "Say why; the audit trail and the reviewers will read it."})
