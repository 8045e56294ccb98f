"""The compliance officer's view of the audit trail."""
from django.core.paginator import Paginator

from .. import selectors
from ..audit import verify_chain
from ..roles import COMPLIANCE
from .common import render_page, role_required


@role_required(COMPLIANCE)
def audit_log(request):
    events = selectors.audit_events_for(request.user)
    action = request.GET.get("action", "").strip()
    if action:
        events = events.filter(action=action)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    context = {"page": page, "action": action, "chain": verify_chain() if request.GET.get("verify") else None}
    return render_page(request, "workflows/audit_log.html", context)
