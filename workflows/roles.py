"""Roles are Django groups (DESIGN.md section 1). Staff/superuser is not a role."""
from django.contrib.auth import get_user_model

SUBMITTER = "submitter"
REVIEWER = "reviewer"
COMPLIANCE = "compliance"
WORKFLOW_ADMIN = "workflow-admin"
ALL_ROLES = (SUBMITTER, REVIEWER, COMPLIANCE, WORKFLOW_ADMIN)
SYSTEM_USERNAME = "system"


def group_names(user) -> set[str]:
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_reviewdesk_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._reviewdesk_groups = cached
    return cached


def has_role(user, role: str) -> bool:
    return role in group_names(user)


def system_user():
    """The account that history rows name for changes made by tasks (generation, routing).

    It cannot log in: inactive, unusable password.
    """
    User = get_user_model()
    user, created = User.objects.get_or_create(username=SYSTEM_USERNAME, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user
