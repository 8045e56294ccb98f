from .pipeline.engines import engine_name
from .roles import ALL_ROLES, group_names


def reviewdesk(request):
    roles = [r for r in ALL_ROLES if r in group_names(request.user)] if hasattr(request, "user") else []
    return {"engine": engine_name(), "user_roles": roles}
