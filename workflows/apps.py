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
        # The audit chainer's message for a web request's commits goes once its response is out.
        from django.core.signals import request_finished

        from . import audit

        request_finished.connect(audit.send_after_response, dispatch_uid="reviewdesk-audit-chain-after-response")
