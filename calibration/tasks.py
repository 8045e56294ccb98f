from celery import shared_task

from . import monitor


@shared_task(name="calibration.tasks.quality_monitor")
def quality_monitor() -> dict[str, str]:
    """Periodic: pause the automation of any workflow whose live escape rate passed its target."""
    return monitor.check_all()
