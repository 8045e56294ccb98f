"""The Django admin is for operators' emergencies only; normal operation never needs it."""
from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from .models import AuditEvent, Draft, ReviewTask, Submission, Workflow, WorkflowVersion


@admin.register(Workflow)
class WorkflowAdmin(SimpleHistoryAdmin):
    list_display = ("slug", "name", "created_at")


@admin.register(WorkflowVersion, Submission, Draft, ReviewTask)
class ReadOnlyHistoryAdmin(SimpleHistoryAdmin):
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "actor_label", "action", "object_type", "object_id")
    list_filter = ("action",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
