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
        # Ids as well as names, in the same statement: the review queue scopes by group id
        # (selectors.queue_scope) and would otherwise read the user's groups a second time.
        rows = list(user.groups.values_list("pk", "name"))
        prime(user, [pk for pk, _ in rows], [name for _, name in rows])
        cached = user._reviewdesk_groups
    return cached


def prime(user, ids, names) -> None:
    """Fill the per-request cache of the user's groups (read here, or with the user by
    auth_backends.ModelBackend)."""
    user._reviewdesk_groups = set(names)
    user._reviewdesk_group_ids = sorted(ids)


def group_ids(user) -> list[int]:
    """The ids of the user's groups, read with their names (one statement a request)."""
    if not user.is_authenticated:
        return []
    if getattr(user, "_reviewdesk_group_ids", None) is None:
        user._reviewdesk_groups = None  # read both again, so that they agree
        group_names(user)
    return user._reviewdesk_group_ids


def has_role(user, role: str) -> bool:
    return role in group_names(user)


_system_user = None


def system_user():
    """The account that history rows name for changes made by tasks (generation, routing).

    It cannot log in: inactive, unusable password. Looked up once per process, because every
    task transaction needs it (see reset_system_user for why the cache stays valid).
    """
    global _system_user
    if _system_user is None:
        _system_user = _ensure_system_user()
    return _system_user


def _ensure_system_user(pk: int | None = None):
    User = get_user_model()
    defaults = {"is_active": False, **({"pk": pk} if pk else {})}
    user, created = User.objects.get_or_create(username=SYSTEM_USERNAME, defaults=defaults)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def reset_system_user(using="default", **kwargs) -> None:
    """After every migrate (and every flush, which re-emits post_migrate) make sure the system
    user exists as a committed row. A flushed database (the test suite's) gets it back under
    the same primary key, so the copy other long-lived processes cached stays valid."""
    global _system_user
    if using != "default":
        return
    previous, _system_user = _system_user, None
    _system_user = _ensure_system_user(previous.pk if previous is not None else None)