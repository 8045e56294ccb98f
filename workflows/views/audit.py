"""The compliance officer's view of the audit trail."""
from django.core.paginator import Paginator

from .. import selectors
from ..audit import verify_chain
from ..forms import AuditFilterForm
from ..roles import COMPLIANCE
from .common import render_page, role_required


@role_required(COMPLIANCE)
def audit_log(request):
    events = selectors.audit_events_for(request.user)
    filters = AuditFilterForm(request.GET)
    if filters.is_valid():
        action = filters.cleaned_data["action"]
        if action:
            events = events.filter(action=action)
        status = 200
    else:
        # A filter that cannot match anything is a mistake to point out, not a reason to
        # show the whole trail as if it had been applied.
        action, events, status = request.GET.get("action", ""), events.none(), 400
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "action": action,
        "filters": filters,
        "chain": verify_chain() if request.GET.get("verify") else None,
    }
    return render_page(request, "workflows/audit_log.html", context, status=status)
