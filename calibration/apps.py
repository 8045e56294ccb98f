from django.apps import AppConfig


class CalibrationConfig(AppConfig):
    """Labels, curves and the threshold recommendation (DESIGN.md section 7): reads what
    workflows stores; workflows never imports it."""

    name = "calibration"
    default_auto_field = "django.db.models.BigAutoField"
