from django.apps import AppConfig


class EvalsConfig(AppConfig):
    """Datasets, cases, eval runs (DESIGN.md section 7): depends on workflows, never the reverse."""

    name = "evals"
    default_auto_field = "django.db.models.BigAutoField"
