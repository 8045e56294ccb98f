from django.apps import AppConfig
from django.db.models.signals import post_migrate


class WorkflowsConfig(AppConfig):
    name = "workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from .roles import reset_system_user

        # After every migrate (and every flush, which re-emits post_migrate) the system user
        # exists as a committed row and the per-process cache points at it.
        post_migrate.connect(reset_system_user, sender=self, dispatch_uid="reviewdesk-system-user")
        # simple-history's manager class made once per model, not per history row written.
        from .history_managers import install

        install()
