from decimal import Decimal

from django import forms

from .models import AlertRule


class PeriodForm(forms.Form):
    days = forms.TypedChoiceField(choices=[(7, "7 days"), (30, "30 days"), (90, "90 days")], coerce=int,
                                  required=False, empty_value=30)


class BudgetForm(forms.Form):
    monthly_usd = forms.DecimalField(
        label="Monthly budget (USD)", required=False, min_value=Decimal("0.01"), max_digits=12, decimal_places=2,
        help_text="Leave empty for no budget. Every model call of the workflow's submissions counts.",
    )
    hard_stop = forms.BooleanField(
        label="Hard stop: pause new drafts when the budget is spent", required=False,
        help_text="Paused requests are kept and drafted when the budget is raised or the month turns.",
    )
    target_seconds = forms.FloatField(label="Latency target (seconds, submitted to released)", min_value=0.1,
                                      max_value=86400)
    target_share = forms.FloatField(label="Share of released drafts within the target (%)", min_value=50,
                                    max_value=100)

    def clean(self):
        data = super().clean()
        if data.get("hard_stop") and data.get("monthly_usd") is None:
            self.add_error("hard_stop", "A hard stop needs a monthly budget.")
        return data


class AlertRuleForm(forms.ModelForm):
    webhook_url = forms.URLField(
        required=False, max_length=500, assume_scheme="https",
        label="Webhook URL (Slack-compatible: receives {\"text\": ...})",
    )

    class Meta:
        model = AlertRule
        fields = ["workflow", "metric", "threshold", "window_minutes", "cooldown_minutes", "email", "webhook_url",
                  "enabled"]
        labels = {"window_minutes": "Window (minutes, for latency, failure and escape rates)",
                  "cooldown_minutes": "Cool-down (minutes)"}

    def __init__(self, *args, workflows=None, **kwargs):
        super().__init__(*args, **kwargs)
        if workflows is not None:
            self.fields["workflow"].queryset = workflows

    def clean(self):
        data = super().clean()
        if not data.get("email") and not data.get("webhook_url"):
            raise forms.ValidationError("Choose at least one way to send the alert: e-mail or a webhook URL.")
        return data
